"""Server adapters: how a stream's bytes reach its socket under each ASGI server, behind one small interface.

`stream_writer(send, max_pending)` returns the best `StreamWriter` (realtime.hub) the running server allows:
under Daphne on plain TCP, writes straight to the socket with Twisted's backpressure (realtime.servers.daphne);
under uvicorn's httptools protocol, writes straight to the transport with uvicorn's flow control
(realtime.servers.uvicorn); anywhere else, a bounded queue drained by the stream's own task
(realtime.servers.queued), so a socket that stops draining can never block a fan-out, whatever `send` does.
`on_shutdown` runs a callback when the server stops: Daphne's reactor trigger, or the ASGI lifespan's shutdown
for servers that have one (livesite.asgi).
"""

from collections.abc import Awaitable, Callable

from realtime.http import Send
from realtime.hub import StreamWriter
from realtime.servers import daphne, uvicorn
from realtime.servers.queued import QueuedWriter

__all__ = ["on_shutdown", "stream_writer"]


def stream_writer(send: Send, *, max_pending: int) -> StreamWriter:
    """The writer for one stream whose response has started (status and headers sent)."""
    return (
        daphne.direct_writer(send, max_pending=max_pending)
        or uvicorn.direct_writer(send, max_pending=max_pending)
        or QueuedWriter(send, max_pending=max_pending)
    )


def on_shutdown(callback: Callable[[], Awaitable[None]]) -> bool:
    """Run `callback` before the server stops, if the server offers a hook (Daphne); True if registered.

    Servers with an ASGI lifespan get theirs from livesite.asgi, which calls the same callback.
    """
    return daphne.on_shutdown(callback)
