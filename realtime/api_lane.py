"""POST /api/publish for API clients without Django's request cycle: the fast path of the DRF view, nothing more.

A service publishing one event per POST spent about 3 ms of worker CPU per request even without middleware
(Django's handler and DRF's sync view each hop to a thread); a bare ASGI handler with the same steps costs a
fraction of that (docs/benchmarks.md, bench/publish_api.py).

It serves a request only when everything is already known to be fine: a JSON body, a well-formed
`Authorization: Token <key>` whose user this process has cached (realtime.tokens), that user's permission
answerable without the database, and events that pass the DRF view's own validation (`validated_events`).
Anything else (an unknown or bad token, a permission to look up, a form body, invalid events) is handed,
body and all, to `fallback` (Django and the DRF view), which answers exactly as it always does: the first
request of a token goes through Django and fills the cache for the next ones. So the two doors cannot
disagree on an error; the only answers produced here are 202 and the view's own 503.
"""

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from rest_framework.exceptions import ValidationError

from realtime import tokens
from realtime.api import PublishUnavailable, validated_events
from realtime.dispatcher import DispatchUnavailable
from realtime.events import InvalidEvent
from realtime.publish import apublish_many

PATH = "/api/publish"
PERMISSION = "realtime.publish_event"

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
        _authorise(scope)
        items = _validated(scope, body)
        try:
            events = await apublish_many(items)
        except InvalidEvent:
            raise _Delegate from None
    except _Delegate:
        return await fallback(scope, _replay(body, state == _COMPLETE, receive), send)
    except DispatchUnavailable:
        detail = str(PublishUnavailable.default_detail)
        return await _send_json(send, 503, {"detail": detail, "code": "dispatch_unavailable"})
    await _send_json(send, 202, {"ids": [event.id for event in events]})


def _authorise(scope: dict) -> None:
    authorization = b""
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != b"token":
        raise _Delegate
    try:
        key = parts[1].decode()
    except UnicodeDecodeError:
        raise _Delegate from None
    found = tokens.cached(key)
    if found is None:
        raise _Delegate
    user = found[0]
    try:
        # Answered from the permissions cached on the user object when it was cached (realtime.tokens).
        allowed = user.is_active and user.has_perm(PERMISSION)
    except SynchronousOnlyOperation:
        raise _Delegate from None
    if not allowed:
        raise _Delegate


def _validated(scope: dict, body: bytes) -> list[tuple[str, str, Any]]:
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
    if content_type.split(b";", 1)[0].strip().lower() != b"application/json":
        raise _Delegate
    try:
        payload = json.loads(body, parse_constant=_no_constants) if body else {}
        return validated_events(payload)
    except (ValueError, ValidationError):
        raise _Delegate from None


def _no_constants(name: str) -> None:
    # NaN and Infinity are not JSON; DRF's parser refuses them too (with its own message, via the fallback).
    raise ValueError(name)


_COMPLETE, _TOO_LARGE, _GONE = "complete", "too large", "gone"


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
        if not message.get("more_body", False):
            return b"".join(chunks), _COMPLETE
        if size > limit:
            return b"".join(chunks), _TOO_LARGE


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
