"""What the stream needs from Daphne beyond ASGI: backpressure notices, and writes straight to the socket.

ASGI's `send` has no backpressure, and under Daphne each body message travels: handle_reply coroutine ->
twisted.web Request.write -> chunk framing -> transport.writeSequence -> register the socket with the event
loop for writing -> wait for writability -> send() -> unregister. The profile (docs/benchmarks.md) put
40-58 us of worker CPU on each delivery, mostly in that register/unregister churn and the garbage it makes.

Twisted offers both things we need without private hooks into the event loop: a push producer registered on
the request is paused when the socket's buffer passes 64 KB and resumed once it drains; and while the
transport holds no buffered bytes, a non-blocking `socket.send` of the framed chunk is exactly what Twisted
would do one loop step later. So each stream gets a `DirectWriter`: if the transport's buffer is empty it
sends at once (one syscall), and hands any remainder, or everything when the buffer is not empty, to the
transport as usual, so ordering and Twisted's own buffering and error handling are kept.

Daphne hands its request object to the app only as the first argument of the `send` partial; the adapter
checks every attribute it relies on and returns None if one is missing (another server, TLS, another Daphne
or Twisted version): the stream then gets the generic queued writer, a warning is logged once, and
tests/system/test_servers.py fails, since under the pinned versions the direct path must be the one in use.
"""

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from realtime.http import Send
from realtime.hub import Payload
from realtime.servers.backlog import Backlog

if TYPE_CHECKING:
    from twisted.internet.base import ReactorBase
    from twisted.internet.defer import Deferred

logger = logging.getLogger(__name__)

_REQUEST_ATTRIBUTES = ("channel", "finished", "_disconnected", "chunked", "registerProducer")
_TRANSPORT_ATTRIBUTES = (
    "socket",
    "dataBuffer",
    "_tempDataLen",
    "disconnected",
    "disconnecting",
    "write",
    "abortConnection",
)
_warned = False


# Twisted's request and transport are reached through Daphne's `send` partial, and used by attributes (some
# private) that are checked at run time, not by any declared type: Any below is that boundary.
def daphne_request(send: Send) -> Any | None:
    """The twisted.web request behind an ASGI `send` under Daphne, or None."""
    request = (getattr(send, "args", None) or (None,))[0]
    if request is None or not all(hasattr(request, name) for name in _REQUEST_ATTRIBUTES):
        return None
    return request


class DaphneWriter(Backlog):
    """Writes framed chunks of one chunked HTTP/1.1 response straight to its socket when nothing is queued.

    Also Twisted's push producer for the request: paused when the transport's buffer passes 64 KB, resumed
    once it drains. While paused, payloads wait in `pending`, at most `max_pending` events.
    """

    kind = "daphne-direct"
    # One per open stream: slots, and no backlog deque until the socket first stops draining.
    __slots__ = (
        "paused",
        "request",
        "send",
        "socket",
        "transport",
    )

    def __init__(self, send: Send, request: Any, transport: Any, *, max_pending: int) -> None:
        self.send = send
        self.request = request
        self.transport = transport
        self.socket = transport.socket
        super().__init__(max_pending)
        self.paused = False

    # -- Twisted's IPushProducer interface (called from the reactor, which runs on the asyncio loop) -------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        pending = self.pending
        while pending and not self.paused and not self.ending:
            payload = pending.popleft()
            self.pending_frames -= payload.frames
            self._write(payload.framed)
        if not pending:
            self.pending = None

    def stopProducing(self) -> None:
        # The server reports the disconnect to the stream's task, which cleans up.
        pass

    # -- StreamWriter -------------------------------------------------------------------------------------

    def write(self, payload: Payload) -> bool:
        if self.ending:
            return False
        if self.paused or self.pending:
            return self.hold(payload)
        return self._write(payload.framed)

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        # Daphne's own send path ends the chunked response (and never blocks: it has no backpressure).
        if not self._end_response(self.send, final):
            return
        if abort_after_secs is not None:
            # A reader that never reads again would otherwise keep Twisted's buffer for this socket forever
            # (HTTP/1.1 keeps the connection open).
            transport = self.transport
            asyncio.get_running_loop().call_later(
                abort_after_secs, lambda: None if transport.disconnected else transport.abortConnection()
            )

    def _write(self, framed: bytes) -> bool:
        request, transport = self.request, self.transport
        if request.finished or request._disconnected or transport.disconnected or transport.disconnecting:
            return False
        if transport.dataBuffer or transport._tempDataLen:
            transport.write(framed)  # Bytes are queued already: keep the order, let Twisted send.
            return True
        try:
            sent = self.socket.send(framed)
        except BlockingIOError:
            sent = 0
        except OSError:
            # A broken connection: let Twisted find out and report the disconnect the usual way.
            transport.write(framed)
            return True
        if sent < len(framed):
            transport.write(framed[sent:])
        return True


def direct_writer(send: Send, *, max_pending: int) -> DaphneWriter | None:
    """A direct writer where the server is Daphne on plain TCP, else None (the caller takes the generic one)."""
    global _warned
    request = daphne_request(send)
    if request is None:
        return None
    transport = getattr(request.channel, "transport", None)
    if not request.chunked or not all(hasattr(transport, name) for name in _TRANSPORT_ATTRIBUTES):
        if not _warned:
            _warned = True
            logger.warning("Daphne streams use the queued writer: the direct socket path is unavailable here")
        return None
    writer = DaphneWriter(send, request, transport, max_pending=max_pending)
    try:
        request.registerProducer(writer, True)
    except (ValueError, RuntimeError):
        logger.warning("could not register for backpressure; using the queued writer", exc_info=True)
        return None
    return writer


def on_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """Run `callback` when Daphne shuts down (SIGTERM, SIGINT), before its loop stops; True if registered.

    Daphne has no ASGI lifespan, but it runs a Twisted reactor whose "before shutdown" triggers may return a
    Deferred that the shutdown waits for.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import defer, reactor  # Imported here: only under Daphne's reactor.

    def trigger() -> "Deferred[None]":
        return defer.Deferred.fromFuture(asyncio.ensure_future(callback()))

    # Without the mypy-zope plugin mypy reads an interface's methods (declared without `self`) one argument
    # off; the reactor is a ReactorBase, whose methods are declared as usual.
    cast("ReactorBase", reactor).addSystemEventTrigger("before", "shutdown", trigger)
    return True


def guard_requests(*, limit_for: Callable[[bytes], int], deadline_secs: float) -> bool:
    """Make Daphne refuse what it would otherwise buffer or parse in the reactor; True if installed.

    Twisted reads every request body whole before the app runs, with no size limit (600 MB took a worker to
    740 MB), parses form bodies in the event loop (20 MB of `a=b&...` froze every stream of the worker for
    3 s), and waits for a trickling client forever. Daphne's request class is replaced by a subclass that:
    - never parses form bodies (Twisted's `_parsePOSTFormSubmission` switch; Django parses them, off the loop);
    - answers 413 JSON and closes as soon as the declared Content-Length (`gotLength`) or the bytes received
      (`handleContentChunk`) pass `limit_for(path)`;
    - answers 408 JSON and closes if the headers and body are not all in within `deadline_secs`.
    Couplings to Twisted and Daphne internals, all checked by tests/system/test_hostile_requests.py: Daphne
    builds requests from its module-level `WebRequest` (HTTPFactory.buildProtocol), Twisted keeps the request
    line's path in `channel._path` until the request is received, and honours `_parsePOSTFormSubmission`.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    import io

    from daphne import http_protocol
    from twisted.internet import reactor

    base: Any = http_protocol.WebRequest
    if getattr(base, "livesite_guarded", False):
        return True

    class GuardedRequest(base):  # type: ignore[misc]
        livesite_guarded = True

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._parsePOSTFormSubmission = False
            self.livesite_received = 0
            self.livesite_limit: int | None = None
            self.livesite_refused = False
            # Twisted's reactor, through its zope interfaces: mypy without the zope plugin misreads them.
            self.livesite_deadline: Any = cast(Any, reactor).callLater(deadline_secs, self.livesite_too_slow)

        def gotLength(self, length: int | None) -> None:
            path = (getattr(self.channel, "_path", b"") or b"").partition(b"?")[0]
            self.livesite_limit = limit_for(path)
            if length is not None and length > self.livesite_limit:
                self.content = io.BytesIO()
                self.livesite_refuse(413, "too_large", f"the request body is larger than {self.livesite_limit:,} bytes")
                return
            super().gotLength(length)

        def handleContentChunk(self, data: bytes) -> None:
            if self.livesite_refused:
                return
            self.livesite_received += len(data)
            if self.livesite_limit is not None and self.livesite_received > self.livesite_limit:
                self.livesite_refuse(413, "too_large", f"the request body is larger than {self.livesite_limit:,} bytes")
                return
            super().handleContentChunk(data)

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            self.livesite_stop_deadline()
            if self.livesite_refused:
                return
            super().requestReceived(command, path, version)

        def connectionLost(self, reason: Any) -> None:
            self.livesite_stop_deadline()
            super().connectionLost(reason)

        def livesite_stop_deadline(self) -> None:
            if self.livesite_deadline is not None and self.livesite_deadline.active():
                self.livesite_deadline.cancel()
            self.livesite_deadline = None

        def livesite_too_slow(self) -> None:
            self.livesite_deadline = None
            self.livesite_refuse(408, "request_timeout", f"the request did not arrive within {deadline_secs:g} s")

        def livesite_refuse(self, status: int, code: str, detail: str) -> None:
            if self.livesite_refused:
                return
            self.livesite_refused = True
            self.livesite_stop_deadline()
            reason = {408: b"Request Timeout", 413: b"Content Too Large"}[status]
            self.channel.transport.write(_json_refusal(status, reason, code, detail))
            logger.warning("refused a request (%d %s) from %s", status, code, self.client)
            self.channel.loseConnection()

    http_protocol.WebRequest = GuardedRequest
    _guard_channels(http_protocol)
    return True


def _json_refusal(status: int, reason: bytes, code: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail, "code": code}).encode()
    head = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (status, reason, len(body))
    return head + b"connection: close\r\n\r\n" + body


def _guard_channels(http_protocol: Any) -> None:
    """Headers Twisted refuses before any request exists get a JSON answer too, instead of a dropped
    connection (a line past 16 KiB) or a bare `400 Bad Request` (headers past 16 KiB in all, a malformed line).

    Daphne builds each connection's Twisted HTTPChannel in HTTPFactory.buildProtocol; the channel's class is
    swapped for a subclass there (no per-connection object: 100,000 streams cost nothing more).
    """
    from twisted.web import http

    class GuardedChannel(http.HTTPChannel):
        # Twisted's transport and channel through their zope interfaces: Any, as mypy misreads them.
        def lineLengthExceeded(self, line: bytes) -> None:
            channel: Any = self
            detail = f"a request or header line is longer than {channel.MAX_LENGTH:,} bytes"
            channel.transport.write(_json_refusal(431, b"Request Header Fields Too Large", "header_too_large", detail))
            channel.transport.loseConnection()

        def _respondToBadRequestAndDisconnect(self) -> None:
            channel: Any = self
            detail = f"the request line or headers are malformed, or past {channel.totalHeadersSize:,} bytes in all"
            channel.transport.write(_json_refusal(400, b"Bad Request", "bad_request", detail))
            channel.loseConnection()

    factory: Any = http_protocol.HTTPFactory
    build = factory.buildProtocol

    def buildProtocol(self: Any, addr: Any) -> Any:
        protocol = build(self, addr)
        channel = getattr(protocol, "_channel", None)
        if type(channel) is http.HTTPChannel:
            channel.__class__ = GuardedChannel
        return protocol

    factory.buildProtocol = buildProtocol
