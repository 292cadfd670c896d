"""Who is asking, for every real-time endpoint: a session (with Django's CSRF check), a DRF token, or a peer.

The one place credentials are read. The ORM is reached only through `_load_session_user` and
`tokens.lookup`, each run in a thread; a token seen within TOKEN_CACHE_SECS costs no thread and no query.
A loaded user has its permissions loaded with it, so `can_publish` never touches the database.
"""

import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import cast

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponseBase
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.datastructures import CaseInsensitiveMapping
from django.utils.module_loading import import_string

from realtime import conf, peers, revocation, tickets, tokens
from realtime.http import HttpError, Request

PUBLISH_PERMISSION = "realtime.publish_event"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated party of one request; `user` is a Django user (see tokens.User)."""

    member_id: int | None
    user: tokens.User | None = None
    scheme: str = "anonymous"  # "anonymous" | "session" | "token"
    # Which credential it came with, as realtime.revocation names it (never the secret itself): a stream
    # opened with it is closed when that credential is revoked.
    credential: str | None = None
    # The secret it came with (a token's key, a session's key), for a stream ticket to point at; never logged.
    secret: str = field(default="", repr=False)

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
        found = None if key is None else tokens.cached(key) or await _alookup_token(key)
        if key is None or found is None:
            raise HttpError(401, "invalid_token", "invalid token: send 'Authorization: Token <key>' with a valid key")
        user = found[0]
        return Caller(user.pk, user, "token", revocation.token_credential(key), key)
    session_key = _session_key(request.header("cookie"))
    if session_key is None:
        return ANONYMOUS
    session_user = await _aload_session_user(session_key)
    if session_user is None:
        return ANONYMOUS
    if request.method not in SAFE_METHODS:
        reason = csrf_failure(request)
        if reason is not None:
            raise HttpError(403, "csrf_failed", f"CSRF check failed: {reason} (send the X-CSRFToken header)")
    return Caller(session_user.pk, session_user, "session", revocation.session_credential(session_key), session_key)


async def aauthenticate_ticket(ticket: str) -> Caller:
    """Async: the caller a stream ticket was made for, its credential checked again now; the ticket is used up.

    Raises HttpError 401 for a ticket that is unknown, used, expired, or whose credential no longer holds.
    """
    found = await tickets.get().atake(ticket) if 0 < len(ticket) <= 100 else None
    caller = None
    if found is not None:
        scheme, secret = found
        if scheme == "token":
            looked_up = tokens.cached(secret) or await _alookup_token(secret)
            if looked_up is not None:
                user = looked_up[0]
                caller = Caller(user.pk, user, "token", revocation.token_credential(secret), secret)
        elif scheme == "session":
            session_user = await _aload_session_user(secret)
            if session_user is not None:
                caller = Caller(session_user.pk, session_user, "session", revocation.session_credential(secret), secret)
    if caller is None:
        raise HttpError(
            401,
            "invalid_ticket",
            "the stream ticket is unknown, used or expired: ask POST /realtime/tickets for another",
        )
    return caller


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


def _load_session_user(session_key: str) -> tokens.User | None:
    # Django's own checks (the session's auth hash, an active user) through a bare request.
    request = HttpRequest()
    request.session = import_string(settings.SESSION_ENGINE).SessionStore(session_key)
    found = get_user(request)
    if not found.is_authenticated:
        return None
    # Django types the swappable user model as AbstractBaseUser; realtime needs what tokens.User lists.
    user = cast(tokens.User, found)
    user.get_all_permissions()  # Loaded now, in this thread: has_perm needs no query later.
    return user


# Channels is untyped: the wrappers are annotated with the types of the functions they run in a thread.
_aload_session_user: Callable[[str], Awaitable[tokens.User | None]] = database_sync_to_async(_load_session_user)
_alookup_token: Callable[[str], Awaitable[tokens.Found | None]] = database_sync_to_async(tokens.lookup)


class _CsrfCheck(CsrfViewMiddleware):
    # Django's CSRF check as the middleware runs it (cookie, token, Origin, Referer, trusted origins), but its
    # `_reject` hands back the reason instead of rendering the failure page. `_reject(request, reason)` is
    # the one method every refusal goes through in Django 4.1-5.2; tests/realtime/test_endpoints.py fails if
    # that changes.
    def _reject(self, request: HttpRequest, reason: str) -> str:
        return reason


def _not_called(request: HttpRequest, /, *args: object, **kwargs: object) -> HttpResponseBase:
    """Stands in for the next handler and the view: the CSRF check only reads the request, calling neither."""
    raise AssertionError("the CSRF check called its handler or view")


def csrf_failure(request: Request) -> str | None:
    """Django's reason for refusing this request's CSRF check, or None if it passes."""
    django_request = ASGIRequest(request.scope, io.BytesIO(request.body))
    check = _CsrfCheck(_not_called)
    check.process_request(django_request)
    # `_reject` returns the reason (a str) where Django's returns a response.
    result: object = check.process_view(django_request, _not_called, (), {})
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
