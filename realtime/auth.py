"""Who is asking, for every real-time endpoint: a session (with Django's CSRF check), a DRF token, or a peer.

The one place credentials are read. The ORM is reached only through `_load_session_user` and
`tokens.lookup`, each run in a thread; a token seen within TOKEN_CACHE_SECS costs no thread and no query.
A loaded user has its permissions loaded with it, so `can_publish` never touches the database.
"""

import io
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import CaseInsensitiveMapping
from django.utils.module_loading import import_string

from realtime import conf, peers, tokens
from realtime.http import HttpError, Request

PUBLISH_PERMISSION = "realtime.publish_event"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party of one request. `user` is a Django user (Any: the user model is swappable)."""

    member_id: int | None
    user: Any = None
    scheme: str = "anonymous"  # "anonymous" | "session" | "token"

    @property
    def is_staff(self) -> bool:
        return bool(self.user is not None and self.user.is_active and self.user.is_staff)


ANONYMOUS = Caller(None)


def token_from_authorization(value: str) -> str | None:
    """The key of an `Authorization: Token <key>` header, or None for any other scheme or shape."""
    scheme, _, key = value.partition(" ")
    key = key.strip()
    if scheme.lower() != "token" or not key or " " in key:
        return None
    return key


async def aauthenticate(request: Request) -> Caller:
    """Async: the caller of `request`: by token if an Authorization header is sent, else by session cookie.

    Raises HttpError: 401 for an Authorization header that is not a valid token (never silently anonymous),
    403 for a session-authenticated unsafe request that fails Django's CSRF check, with Django's reason.
    """
    authorization = request.header("authorization")
    if authorization:
        key = token_from_authorization(authorization)
        found = None
        if key is not None:
            found = tokens.cached(key) or await _alookup_token(key)
        if found is None:
            raise HttpError(401, "invalid_token", "invalid token: send 'Authorization: Token <key>' with a valid key")
        user = found[0]
        return Caller(user.pk, user, "token")
    session_key = _session_key(request.header("cookie"))
    if session_key is None:
        return ANONYMOUS
    user = await _aload_session_user(session_key)
    if user is None:
        return ANONYMOUS
    if request.method not in SAFE_METHODS:
        reason = csrf_failure(request)
        if reason is not None:
            raise HttpError(403, "csrf_failed", f"CSRF check failed: {reason} (send the X-CSRFToken header)")
    return Caller(user.pk, user, "session")


def can_publish(caller: Caller) -> bool:
    """Whether the caller may use the generic publish API (superusers may; others need the permission)."""
    user = caller.user
    return bool(user is not None and user.is_active and user.has_perm(PUBLISH_PERMISSION))


def _session_key(cookie_header: str) -> str | None:
    if not cookie_header:
        return None
    try:
        morsel = SimpleCookie(cookie_header).get(settings.SESSION_COOKIE_NAME)
    except CookieError:
        return None
    return morsel.value if morsel is not None and morsel.value else None


def _load_session_user(session_key: str) -> Any:
    # Django's own checks (the session's auth hash, an active user) through a bare request.
    request = HttpRequest()
    request.session = import_string(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    if not user.is_authenticated:
        return None
    user.get_all_permissions()  # Loaded now, in this thread: has_perm needs no query later.
    return user


_aload_session_user = database_sync_to_async(_load_session_user)
_alookup_token = database_sync_to_async(tokens.lookup)


class _CsrfCheck(CsrfViewMiddleware):
    # Django's CSRF check as the middleware runs it (cookie, token, Origin, Referer, trusted origins), but its
    # `_reject` hands back the reason instead of rendering the failure page. `_reject(request, reason)` is
    # the one method every refusal goes through in Django 4.1-5.2; tests/realtime/test_endpoints.py fails if
    # that changes.
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def csrf_failure(request: Request) -> str | None:
    """Django's reason for refusing this request's CSRF check, or None if it passes."""
    django_request = ASGIRequest(request.scope, io.BytesIO(request.body))
    check = _CsrfCheck(lambda _request: None)
    check.process_request(django_request)
    result = check.process_view(django_request, None, (), {})
    return result if isinstance(result, str) else None


def verify_peer(request: Request, *, now: float) -> str:
    """The name of the peer data centre that signed `request`; raises HttpError 403 saying why not."""
    try:
        return peers.verify(
            CaseInsensitiveMapping(request.headers),
            request.body,
            secret=conf.get("PEER_SECRET"),
            known=set(conf.get("PEERS")),
            now=now,
        )
    except peers.InvalidPeerRequest as exc:
        raise HttpError(403, "peer_rejected", str(exc)) from None
