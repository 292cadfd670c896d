"""The generic stream writer: a bounded queue per stream, drained by its own task through ASGI `send`.

Under uvicorn and hypercorn `send` awaits the socket's drain, so one reader that stops reading would block
whoever awaited it. Here nobody but the stream's own drain task ever awaits `send`: a fan-out appends the
shared payload to each stream's queue and moves on. A queue past `max_pending` events refuses the write, and
the stream is reset (realtime.hub.Connection). Works under any ASGI server, Daphne included.
"""

import asyncio
import contextlib
import logging
from collections import deque

from realtime.http import Send
from realtime.hub import Payload, body

logger = logging.getLogger(__name__)

_END = {"type": "http.response.body", "body": b"", "more_body": False}


class QueuedWriter:
    kind = "queued"
    __slots__ = ("_abort", "_final", "_wake", "ending", "frames", "max_pending", "queue", "send", "task")

    def __init__(self, send: Send, *, max_pending: int) -> None:
        self.send = send
        self.max_pending = max_pending
        self.queue: deque[Payload] = deque()
        self.frames = 0
        self.ending = False
        self._final = b""
        self._wake = asyncio.Event()
        self._abort: asyncio.TimerHandle | None = None
        self.task = asyncio.get_running_loop().create_task(self._drain(), name="realtime-stream-drain")

    def write(self, payload: Payload) -> bool:
        if self.ending or self.frames + payload.frames > self.max_pending:
            return False
        self.queue.append(payload)
        self.frames += payload.frames
        self._wake.set()
        return True

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        if self.ending:
            return
        self.ending = True
        self._final = final
        if abort_after_secs is not None:
            # A reset: what is queued is dropped (the client refetches anyway), and if the socket does not take
            # the last frame in time the task is cancelled; the stream's task then returns and the server
            # closes the connection.
            self.queue.clear()
            self.frames = 0
            self._abort = asyncio.get_running_loop().call_later(abort_after_secs, self.task.cancel)
        self._wake.set()

    async def _drain(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self.queue:
                    payload = self.queue.popleft()
                    self.frames -= payload.frames
                    await self.send(payload.message)
                if self.ending:
                    if self._final:
                        await self.send(body(self._final))
                    await self.send(_END)
                    return
        except asyncio.CancelledError:
            raise
        except OSError:
            # The client went away mid-write: the server reports the disconnect to the stream's task.
            logger.debug("stream write failed: the client is gone", exc_info=True)
        finally:
            if self._abort is not None:
                self._abort.cancel()

    async def aended(self) -> None:
        if self.ending:
            await asyncio.shield(self.task)  # The drain task sends the final bytes, then returns.

    async def aclose(self) -> None:
        """Stop the drain task (the stream's task is returning)."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
