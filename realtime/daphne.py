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
checks every attribute it relies on and falls back to plain ASGI sends if one is missing (another server,
TLS, another Daphne or Twisted version).
"""

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.hub import Connection

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


def daphne_request(send: Any) -> Any | None:
    """The twisted.web request behind an ASGI `send` under Daphne, or None."""
    request = (getattr(send, "args", None) or (None,))[0]
    if request is None or not all(hasattr(request, name) for name in _REQUEST_ATTRIBUTES):
        return None
    return request


class _Producer:
    __slots__ = ("conn", "resuming")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.resuming: asyncio.Task[None] | None = None

    def pauseProducing(self) -> None:  # Twisted's IPushProducer interface.
        self.conn.pause()

    def resumeProducing(self) -> None:
        # Called from the reactor, which runs on the asyncio loop under Daphne.
        self.resuming = asyncio.get_running_loop().create_task(self.conn.resume())

    def stopProducing(self) -> None:
        # The server reports the disconnect to the stream's task, which cleans up.
        pass


class DirectWriter:
    """Writes framed chunks of one chunked HTTP/1.1 response straight to its socket when nothing is queued."""

    __slots__ = ("request", "socket", "transport")

    def __init__(self, request: Any, transport: Any) -> None:
        self.request = request
        self.transport = transport
        self.socket = transport.socket

    def write(self, framed: bytes) -> bool:
        """Write one already-framed chunk; False if the stream is gone (nothing written)."""
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

    def abort_later(self, delay_secs: float) -> None:
        """Drop the TCP connection in `delay_secs` unless it closed: a reader that never reads again would
        otherwise keep Twisted's buffer for this socket forever (HTTP/1.1 keeps the connection open)."""
        transport = self.transport
        asyncio.get_running_loop().call_later(
            delay_secs, lambda: None if transport.disconnected else transport.abortConnection()
        )


def adapt(send: Any, conn: Connection) -> None:
    """Give `conn` backpressure notices and a direct writer where the server is Daphne on plain TCP."""
    global _warned
    request = daphne_request(send)
    if request is None:
        return
    try:
        request.registerProducer(_Producer(conn), True)
    except (ValueError, RuntimeError):
        logger.warning("could not watch connection %s for backpressure", conn.id, exc_info=True)
        return
    transport = getattr(request.channel, "transport", None)
    if not request.chunked or not all(hasattr(transport, name) for name in _TRANSPORT_ATTRIBUTES):
        if not _warned:
            _warned = True
            logger.warning("streams are written through ASGI sends: the direct socket path is unavailable")
        return
    conn.direct = DirectWriter(request, transport)


def on_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """Run `callback` when Daphne shuts down (SIGTERM, SIGINT), before its loop stops; True if registered.

    Daphne has no ASGI lifespan, but it runs a Twisted reactor whose "before shutdown" triggers may return a
    Deferred that the shutdown waits for.
    """
    if "twisted.internet.reactor" not in sys.modules:
        return False
    from twisted.internet import defer, reactor  # Imported here: only under Daphne's reactor.

    def trigger() -> Any:
        return defer.Deferred.fromFuture(asyncio.ensure_future(callback()))

    reactor.addSystemEventTrigger("before", "shutdown", trigger)
    return True
