"""One JSON error shape for every API: {"detail": message, "code": stable_code[, "errors": fields]}."""

from typing import Any

from django.http import JsonResponse
from rest_framework.response import Response
from rest_framework.views import exception_handler


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    """A JSON error for plain Django views, in the same shape DRF views answer with."""
    return JsonResponse({"detail": message, "code": code, **extra}, status=status)


def json_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
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
