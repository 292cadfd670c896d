"""POST /api/publish for API clients without Django's request cycle: the fast path of the DRF view, nothing more.

A service publishing one event per POST spent about 3 ms of worker CPU per request even without middleware
(Django's handler and DRF's sync view each hop to a thread); a bare ASGI handler with the same steps costs a
fraction of that (docs/benchmarks.md, bench/publish_api.py).

It serves a request only when everything is already known to be fine: a plain request (no query string, one
`Authorization: Token <key>` header, a UTF-8 JSON body, JSON accepted in return), a token whose user this
process has cached (realtime.tokens), that user's permission answerable without the database, and events
that pass the DRF view's own validation (`validated_events`) and size limit. Anything else (an unknown or bad
token, a permission to look up, a form body, content negotiation, invalid events) is handed, body and all,
to `fallback` (Django and the DRF view), which answers as it always does: the first request of a token goes
through Django and fills the cache for the next ones. So every error comes from the DRF view; the only
answers produced here are 202 and the view's own 503 (tests/realtime/test_api_lane.py compares the doors).
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from rest_framework.exceptions import ValidationError

from realtime import tokens
from realtime.api import PublishUnavailable, can_publish, validated_events
from realtime.dispatcher import DispatchUnavailable
from realtime.events import InvalidEvent
from realtime.publishing import apublish_many

PATH = "/api/publish"
ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


class _Delegate(Exception):
    """Not a fast-path request: let the DRF view answer it."""


def handles(scope: dict) -> bool:
    """Whether a request may take this lane (the caller already knows it is a cookie-less API client)."""
    return scope["method"] == "POST" and scope["path"] == PATH


async def publish(scope: dict, receive: Callable[[], Awaitable[dict]], send: Any, fallback: ASGIApp) -> None:
    body, state = await _read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)
    if state == _GONE:
        return  # The client left before sending its body: nobody to answer.
    try:
        if state != _COMPLETE:
            raise _Delegate
        key = _plain_request(scope)
        _authorise(key)
        items = _validated(body)
        try:
            events = await apublish_many(items)
        except InvalidEvent:
            raise _Delegate from None
    except _Delegate:
        return await fallback(scope, _replay(body, state != _TOO_LARGE, receive), send)
    except DispatchUnavailable:
        detail = str(PublishUnavailable.default_detail)
        return await _send_json(send, 503, {"detail": detail, "code": "dispatch_unavailable"})
    await _send_json(send, 202, {"ids": [event.id for event in events]})


_JSON_TYPES = {b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"}
_JSON_ACCEPTS = {b"", b"*/*", b"application/json"}


def _plain_request(scope: dict) -> str:
    """The token of a request DRF would take as plain JSON in, JSON out; anything else is delegated.

    No query string (DRF reads `?format=`), one Authorization header (Django joins repeated ones), a JSON
    content type in UTF-8, and an Accept header that lets DRF choose JSON (no header, */* or JSON).
    """
    if scope.get("query_string"):
        raise _Delegate
    authorization: list[bytes] = []
    content_type = accept = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization.append(value)
        elif name == b"content-type":
            content_type = value.strip().lower()
        elif name == b"accept":
            accept = value.strip().lower()
    if len(authorization) != 1 or content_type not in _JSON_TYPES or accept not in _JSON_ACCEPTS:
        raise _Delegate
    parts = authorization[0].split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        raise _Delegate
    try:
        return parts[1].decode("ascii")
    except UnicodeDecodeError:
        raise _Delegate from None


def _authorise(key: str) -> None:
    found = tokens.cached(key)
    if found is None:
        raise _Delegate
    try:
        # The DRF view's own check, answered from the permissions cached with the user (realtime.tokens).
        allowed = can_publish(found[0])
    except SynchronousOnlyOperation:
        raise _Delegate from None
    if not allowed:
        raise _Delegate


def _validated(body: bytes) -> list[tuple[str, str, Any]]:
    try:
        # Strict UTF-8 (DRF's default charset): a BOM or another encoding goes to DRF, which has its own say.
        payload = json.loads(body.decode("utf-8"), parse_constant=_no_constants) if body else {}
        return validated_events(payload)
    except (ValueError, RecursionError, ValidationError):
        raise _Delegate from None


def _no_constants(name: str) -> None:
    # NaN and Infinity are not JSON; DRF's parser refuses them too (with its own message, via the fallback).
    raise ValueError(name)


_COMPLETE, _TOO_LARGE, _OVER_LIMIT, _GONE = "complete", "too large", "over the limit, all read", "gone"


async def _read_body(receive: Callable[[], Awaitable[dict]], limit: int) -> tuple[bytes, str]:
    """The request body read up to `limit`, and how reading ended."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"", _GONE
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if size > limit:
            # Django answers this one (413, livesite.errors): hand it over as it came, still being read.
            return b"".join(chunks), _TOO_LARGE if more else _OVER_LIMIT
        if not more:
            return b"".join(chunks), _COMPLETE


def _replay(body: bytes, complete: bool, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
    """A `receive` that hands over what was read, then carries on with the original."""
    replayed = False

    async def replay() -> dict:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": not complete}

    return replay


async def _send_json(send: Any, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
