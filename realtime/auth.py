"""Who is asking: the member behind a session cookie or a DRF token. The ORM boundary of the stream path."""

from http.cookies import CookieError, SimpleCookie

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user
from django.http import HttpRequest
from django.utils.module_loading import import_string

from realtime import tokens


def _member_from_session(session_key: str) -> int | None:
    # Reuse Django's own checks (session hash, active user) through a bare request.
    request = HttpRequest()
    request.session = import_string(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(request)
    return user.pk if user.is_authenticated else None


def _member_from_token(key: str) -> int | None:
    found = tokens.lookup(key)
    return None if found is None else found[0].pk


def token_from_authorization(value: str) -> str | None:
    scheme, _, key = value.partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return None
    return key.strip()


class BadCredentials(Exception):
    """A token was given but is unknown or its user inactive."""


def _resolve(cookie_header: str, authorization: str) -> int | None:
    if authorization:
        key = token_from_authorization(authorization)
        member = _member_from_token(key) if key else None
        if member is None:
            raise BadCredentials("invalid token: send 'Authorization: Token <key>' with a valid key")
        return member
    if cookie_header:
        try:
            cookies = SimpleCookie(cookie_header)
        except CookieError:
            return None
        morsel = cookies.get(settings.SESSION_COOKIE_NAME)
        if morsel is not None and morsel.value:
            return _member_from_session(morsel.value)
    return None


_aresolve = database_sync_to_async(_resolve)


async def aresolve(cookie_header: str, authorization: str) -> int | None:
    """Async: the member id for these request headers, None if anonymous; raises BadCredentials."""
    key = token_from_authorization(authorization) if authorization else None
    hit = tokens.cached(key) if key else None
    if hit is not None:
        return hit[0].pk  # No thread, no query: a token seen within TOKEN_CACHE_SECS.
    return await _aresolve(cookie_header, authorization)


def headers_of(scope: dict) -> tuple[str, str]:
    """The Cookie and Authorization headers of an ASGI scope, decoded."""
    cookie = authorization = ""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            cookie = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value.decode("latin-1")
    return cookie, authorization


def _is_staff(member_id: int) -> bool:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=member_id, is_staff=True, is_active=True).exists()


ais_staff = database_sync_to_async(_is_staff)
"""Async: whether the member is active staff."""
