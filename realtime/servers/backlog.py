"""What a direct writer holds while its socket does not drain, shared by the Daphne and uvicorn writers."""

from collections import deque

from realtime.hub import Payload


class Backlog:
    """Payloads waiting for the socket, at most `max_pending` events; none (no deque) until the first waits."""

    __slots__ = ("max_pending", "pending", "pending_frames")

    def __init__(self, max_pending: int) -> None:
        self.max_pending = max_pending
        self.pending: deque[Payload] | None = None
        self.pending_frames = 0

    def hold(self, payload: Payload) -> bool:
        """Queue `payload` behind what waits; False (refused) past `max_pending` events."""
        if self.pending_frames + payload.frames > self.max_pending:
            return False
        if self.pending is None:
            self.pending = deque()
        self.pending.append(payload)
        self.pending_frames += payload.frames
        return True
