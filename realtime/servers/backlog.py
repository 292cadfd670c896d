"""What the direct writers (Daphne's and uvicorn's) share: the bounded backlog while the socket does not drain,
and the end of the response through the server's own `send`."""

import asyncio
import logging
from collections import deque

from realtime.http import Send
from realtime.hub import Payload, body

logger = logging.getLogger(__name__)

_END = {"type": "http.response.body", "body": b"", "more_body": False}


class Backlog:
    """Payloads waiting for the socket, at most `max_pending` events; none (no deque) until the first waits."""

    __slots__ = ("ended", "ending", "max_pending", "pending", "pending_frames")

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending: deque[Payload] | None = None
        self.pending_frames = 0
        self.ending = False
        self.ended: asyncio.Task[None] | None = None

    def hold(self, payload: Payload) -> bool:
        """Queue `payload` behind what waits; False (refused) past `max_pending` events."""
        if self.pending_frames + payload.frames > self.max_pending:
            return False
        if self.pending is None:
            self.pending = deque()
        self.pending.append(payload)
        self.pending_frames += payload.frames
        return True

    def _end_response(self, send: Send, final: bytes) -> bool:
        """Start ending the response, once: what waits is dropped, and a task sends `final` and the end through
        `send` (the server's own, which keeps its state right). False if it was ending already."""
        if self.ending:
            return False
        self.ending = True
        self.pending = None
        self.pending_frames = 0
        self.ended = asyncio.get_running_loop().create_task(_aend(send, final))
        return True

    async def aended(self) -> None:
        if self.ended is not None:
            await asyncio.shield(self.ended)


async def _aend(send: Send, final: bytes) -> None:
    try:
        if final:
            await send(body(final))
        await send(_END)
    except Exception:
        # The response was already finished (or the connection lost): nothing is left to end.
        logger.debug("ending a stream that was already gone", exc_info=True)
