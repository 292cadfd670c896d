"""Writes straight to the transport under uvicorn's httptools protocol, with uvicorn's own flow control.

Under uvicorn, ASGI `send` is the bound `send` of the request's RequestResponseCycle, and it awaits the socket's
drain: so streams there got the queued writer (realtime.servers.queued), a deque, an Event and a task per
stream, and per delivery a wake-up, a task step and a `send` coroutine. For a chunked response whose writing
is not paused, that `send` ends in one `transport.write` of the chunk in chunked framing, which is exactly
`Payload.framed`: so each stream gets a `UvicornWriter`, which writes `framed` to the transport itself (uvloop
sends it at the end of the loop's turn, with whatever else that turn wrote to the socket).

Backpressure is uvicorn's: the protocol's pause_writing/resume_writing (transport buffer past 64 KiB, and
drained again) set `flow.write_paused` and its writable event. While paused, payloads wait in `pending`, at
most `max_pending` events, and one small task per paused stream (none otherwise) awaits `flow.drain()`, then
writes them in order. The response is ended through the cycle's own `send`, so uvicorn's state (response
complete, keep-alive, the next request) stays right.

The cycle is reached through `send.__self__`, and every attribute relied on is checked at run time: under
another server nothing matches and the caller moves on; under uvicorn's h11 protocol (no `chunked_encoding`:
h11 frames the body itself) or another uvicorn version that lacks one, None is returned, a warning is logged
once, and the stream gets the queued writer; tests/system/test_servers.py then fails, since under the pinned
versions the direct path must be the one in use.
"""

import asyncio
import logging
from typing import Any

from realtime.http import Send
from realtime.hub import Payload
from realtime.servers.backlog import Backlog

logger = logging.getLogger(__name__)

_CYCLE_ATTRIBUTES = ("transport", "flow", "chunked_encoding", "response_complete", "disconnected", "scope")
_FLOW_ATTRIBUTES = ("write_paused", "drain")
_TRANSPORT_ATTRIBUTES = ("write", "abort", "is_closing", "get_write_buffer_size")
_warned = False


# uvicorn's cycle, flow control and transport are used by attributes checked at run time, not by any declared
# type (uvicorn's classes are internal): Any below is that boundary.
def uvicorn_cycle(send: Send) -> Any | None:
    """The RequestResponseCycle behind an ASGI `send` under uvicorn, or None under any other server."""
    cycle = getattr(send, "__self__", None)
    if cycle is None or not type(cycle).__module__.startswith("uvicorn."):
        return None
    return cycle


class UvicornWriter(Backlog):
    """Writes framed chunks of one chunked HTTP/1.1 response straight to its transport unless writing is paused.

    While uvicorn's flow control has writing paused, payloads wait in `pending`, at most `max_pending` events,
    and the `resuming` task writes them once the transport has drained.
    """

    kind = "uvicorn-direct"
    # One per open stream: slots, and no backlog deque or task until the socket first stops draining.
    __slots__ = ("cycle", "flow", "resuming", "transport")

    def __init__(self, cycle: Any, *, max_pending: int) -> None:
        self.cycle = cycle
        self.transport = cycle.transport
        self.flow = cycle.flow
        super().__init__(max_pending)
        self.resuming: asyncio.Task[None] | None = None

    # -- StreamWriter -------------------------------------------------------------------------------------

    def write(self, payload: Payload) -> bool:
        if self.ending:
            return False
        if self.flow.write_paused or self.pending:
            if not self.hold(payload):
                return False
            if self.resuming is None:
                self.resuming = asyncio.get_running_loop().create_task(self._resume(), name="realtime-stream-resume")
            return True
        # _write, inlined: this is the hot path, once per stream and event.
        cycle = self.cycle
        if cycle.disconnected or cycle.response_complete or self.transport.is_closing():
            return False
        self.transport.write(payload.framed)
        return True

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        # uvicorn's own send ends the chunked response: it waits for the drain if writing is paused.
        if not self._end_response(self.cycle.send, final):
            return
        if self.resuming is not None:
            self.resuming.cancel()
            self.resuming = None
        if abort_after_secs is not None:
            # A reader that never reads again would otherwise keep this socket's buffer, and the end's task that
            # waits for the drain, forever (a graceful close, uvicorn's keep-alive timeout included, waits for the
            # buffer to drain). One that has read to the end is closed by uvicorn (the stream's `connection: close`).
            cycle, transport = self.cycle, self.transport
            asyncio.get_running_loop().call_later(abort_after_secs, _abort_if_stalled, cycle, transport)

    # -- the write path -----------------------------------------------------------------------------------

    def _write(self, framed: bytes) -> bool:
        cycle = self.cycle
        if cycle.disconnected or cycle.response_complete or self.transport.is_closing():
            return False
        self.transport.write(framed)
        return True

    async def _resume(self) -> None:
        """Write what waited once the transport has drained; only while some payload waits."""
        try:
            while self.pending and not self.ending:
                await self.flow.drain()
                pending = self.pending
                while pending and not self.flow.write_paused and not self.ending:
                    payload = pending.popleft()
                    self.pending_frames -= payload.frames
                    if not self._write(payload.framed):
                        # Gone (the drain also returns on a lost connection): the stream's task cleans up.
                        pending.clear()
                        self.pending_frames = 0
                if not pending:
                    self.pending = None
        finally:
            if not self.ending:
                self.resuming = None


def _abort_if_stalled(cycle: Any, transport: Any) -> None:
    if transport.get_write_buffer_size() or not (cycle.response_complete or cycle.disconnected):
        transport.abort()


def direct_writer(send: Send, *, max_pending: int) -> UvicornWriter | None:
    """A direct writer where the server is uvicorn's httptools protocol, else None (the caller takes another)."""
    global _warned
    cycle = uvicorn_cycle(send)
    if cycle is None:
        return None
    flow, transport = getattr(cycle, "flow", None), getattr(cycle, "transport", None)
    usable = (
        all(hasattr(cycle, name) for name in _CYCLE_ATTRIBUTES)
        and getattr(send, "__func__", None) is getattr(type(cycle), "send", None)
        and all(hasattr(flow, name) for name in _FLOW_ATTRIBUTES)
        and all(hasattr(transport, name) for name in _TRANSPORT_ATTRIBUTES)
    )
    # Only a chunked response's body is `Payload.framed` on the wire (a HEAD response has none).
    if not usable or cycle.chunked_encoding is not True or cycle.scope.get("method") == "HEAD":
        if not _warned:
            _warned = True
            logger.warning("uvicorn streams use the queued writer: the direct transport path is unavailable here")
        return None
    return UvicornWriter(cycle, max_pending=max_pending)
