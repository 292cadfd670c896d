"""Daphne's request guards (realtime.servers.daphne.guard_requests) for every other ASGI server, at the ASGI level.

Under uvicorn (or hypercorn) nothing caps or times a request body on its way to Django: Django's ASGIHandler
buffers the whole of it before DATA_UPLOAD_MAX_MEMORY_SIZE is ever checked, and waits for a trickling client
forever. `guard_requests(app, ...)` wraps the Django application so that each http request:
- is answered 413 at once, before a byte of its body is read, if its declared Content-Length passes
  `limit_for(path)`;
- has its body read into memory here, up to that limit (413 as soon as the bytes read pass it, whatever the
  Content-Length said, chunked or not), within `deadline_secs` (408 otherwise), and only then reaches Django,
  through a `receive` that hands over the body in one message and afterwards forwards the server's own
  (`http.disconnect`).
Refusals are Daphne's: the same status, JSON body (`{"detail", "code"}`), `connection: close`, and one warning
logged each, so clients and operators see the same thing under either server.

Unlike Daphne's, the deadline starts when the server hands over the request, after its headers are in: a
client trickling its headers is the server's business (uvicorn has no header timeout; tests/system/
test_hostile_requests.py says what it does). Buffering here costs nothing Django would not have spent: its
handler reads the whole body before the view runs too. The real-time endpoints never come through here: they
read their bodies themselves (realtime.http.aread_body), and the stream's GET has none.
"""

import asyncio
import json
import logging
from collections.abc import Callable

from realtime.http import CLOSE, JSON_HEADERS, ASGIApp, Message, Receive, Scope, Send
from realtime.servers import daphne

logger = logging.getLogger(__name__)


def guard_requests(app: ASGIApp, *, limit_for: Callable[[bytes], int], deadline_secs: float) -> ASGIApp:
    """Wrap `app` (async) so its http requests arrive whole, within `deadline_secs` and `limit_for(path)` bytes.

    `limit_for` takes the raw request path (bytes, no query), as Daphne's guard does. Other scope types pass,
    and so does everything once the first request shows Daphne's own guard in front (see `_daphne_guarded`).
    """
    daphne_guarded: bool | None = None

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        nonlocal daphne_guarded
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if daphne_guarded is None:
            daphne_guarded = _daphne_guarded(send)
        if daphne_guarded:
            return await app(scope, receive, send)
        limit = limit_for(_raw_path(scope))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            return await _arefuse(scope, send, 413, "too_large", _too_large(limit))
        chunks: list[bytes] = []
        size = 0
        # Only the reading is timed: a refusal sent under the deadline could time out half-sent, then be sent twice.
        try:
            async with asyncio.timeout(deadline_secs):
                while size <= limit:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # The client left before its request was in: nobody is left to answer.
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            detail = f"the request did not arrive within {deadline_secs:g} s"
            return await _arefuse(scope, send, 408, "request_timeout", detail)
        if size > limit:
            return await _arefuse(scope, send, 413, "too_large", _too_large(limit))
        return await app(scope, _Replay(b"".join(chunks), receive), send)

    return guarded


def _daphne_guarded(send: Send) -> bool:
    """Whether this request came through Daphne's guarded request class: then Twisted has checked it already.

    Asked of a request, not of the process: `daphne` in INSTALLED_APPS imports daphne.server, which loads
    the Twisted reactor, so under uvicorn too the reactor is there and daphne.guard_requests returns True.
    """
    request = daphne.daphne_request(send)
    return request is not None and bool(getattr(request, "livesite_guarded", False))


class _Replay:
    """An ASGI `receive` that returns the body read by the guard, then whatever the server's `receive` says."""

    __slots__ = ("body", "receive")

    def __init__(self, body: bytes, receive: Receive) -> None:
        self.body: bytes | None = body
        self.receive = receive

    async def __call__(self) -> Message:
        body = self.body
        if body is None:
            return await self.receive()
        self.body = None
        return {"type": "http.request", "body": body, "more_body": False}


def _raw_path(scope: Scope) -> bytes:
    # Daphne's guard sees the request line's path; ASGI's raw_path is that (some servers keep the query on it).
    raw = scope.get("raw_path")
    if raw:
        return bytes(raw).partition(b"?")[0]
    return str(scope.get("path", "")).encode("utf-8")


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            # A malformed or repeated one never gets here: the server's parser answers it (400).
            return int(value) if value.isdigit() else None
    return None


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit:,} bytes"


async def _arefuse(scope: Scope, send: Send, status: int, code: str, detail: str) -> None:
    """Answer as Daphne's guard does, and close: a refused body may still be on its way."""
    body = json.dumps({"detail": detail, "code": code}).encode()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), CLOSE]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    client = scope.get("client")
    logger.warning("refused a request (%d %s) from %s", status, code, client[0] if client else "?")
