"""One JSON error shape for every API: {"detail": message, "code": stable_code[, "errors": fields]}."""

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException, ErrorDetail, Throttled
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import exception_handler

from realtime import limits
from realtime.http import is_database_unavailable

logger = logging.getLogger(__name__)

# Paths whose clients read JSON: Django's own error pages (unknown URL, a body past
# DATA_UPLOAD_MAX_MEMORY_SIZE, a crash) answer them in the shape below instead of HTML.
API_PREFIXES = ("/api/", "/realtime/")


def error_response(status: int, code: str, message: str, **extra: object) -> JsonResponse:
    """A JSON error for plain Django views, in the same shape DRF views answer with."""
    return JsonResponse({"detail": message, "code": code, **extra}, status=status)


# `context` is DRF's (view, args, kwargs, request), typed as DRF's exception_handler takes it.
# How long a client should wait before retrying after the database did not answer.
DATABASE_RETRY_AFTER_SECS = 5


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if is_database_unavailable(exc):
        logger.warning("database unavailable: %s", exc)
        return Response(
            {
                "detail": "the database did not answer in time; nothing was changed, retry shortly",
                "code": "database_unavailable",
            },
            status=503,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECS)},
        )
    response = exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    codes = getattr(exc, "get_codes", lambda: None)()
    if isinstance(data, dict) and "detail" in data and len(data) == 1:
        code = codes.get("detail") if isinstance(codes, dict) else codes
        response.data = {"detail": str(data["detail"]), "code": code or "error"}
    else:
        response.data = {"detail": "Invalid input: see 'errors'.", "code": "invalid", "errors": data}
    return response


class RateLimited(Throttled):
    """429 with Retry-After (DRF sets it from `wait`), in the code the real-time endpoints use too."""

    default_code = "rate_limited"

    def __init__(self, wait: float | None = None, detail: str | None = None) -> None:
        super().__init__(wait=wait, detail=detail)
        if detail is not None:
            # Ours already says when to retry; DRF would append its own sentence saying it again.
            self.detail = ErrorDetail(detail, code=self.default_code)


def check_rate(scope: str, who: str) -> None:
    """Sync, for DRF views: count one action; raise RateLimited (429) past the scope's rate."""
    try:
        limits.hit(scope, who)
    except limits.Limited as exc:
        raise RateLimited(wait=exc.retry_after_secs, detail=str(exc)) from None


class BodyTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "too_large"
    default_detail = "the request body is too large"


def body_of(request: Request, detail: str | None = None) -> Any:
    """A DRF request's parsed body; one past DATA_UPLOAD_MAX_MEMORY_SIZE is a JSON 413, not Django's HTML 400.

    Any: the client's JSON (or form data), which the calling view validates.
    """
    try:
        return request.data
    except RequestDataTooBig:
        raise BodyTooLarge(detail) from None


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def _too_large_detail() -> str:
    return f"the request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes"


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: a JSON error on API paths (413 for a body past the upload limit), Django's page elsewhere."""
    if not _is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return error_response(413, "too_large", _too_large_detail())
    return error_response(400, "bad_request", "the request could not be read")


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: a JSON error on API paths, Django's page elsewhere."""
    if not _is_api(request):
        return defaults.page_not_found(request, exception)
    return error_response(404, "not_found", f"no endpoint at {request.path}: see /api/docs")


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a JSON error on API paths (the traceback goes to the log, not to the client)."""
    if not _is_api(request):
        return defaults.server_error(request)
    return error_response(500, "server_error", "the server failed on this request; it has been logged")
