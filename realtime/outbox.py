"""Between a worker's channel and its hub: events merged per topic, fanned out at most once per flush interval.

Writing to a stream costs a syscall whatever it carries, so under a high event rate the cost is the number of
writes, not of events. The outbox bounds the writes: the first event after a quiet spell goes out at once;
events that arrive within FLUSH_SECS of the previous flush wait for the next one, merged per topic, and then
reach each subscriber as one write. At a low rate nothing waits; at any rate nothing waits longer than
FLUSH_SECS plus one fan-out; a stream gets at most one write per topic per interval however hot the topic.

Order is kept per topic (one task does every fan-out, topic by topic in first-arrival order). Events of
different topics arriving in one interval may reach a stream subscribed to both in another order than they
were published; the contract only ever promised order per topic.

The receive side is bounded too: `put` waits once `max_frames` or `max_bytes` are waiting, so a worker that
cannot keep up stops reading its channel (whose capacity then applies) instead of growing without limit.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

logger = logging.getLogger(__name__)

# (topic, frames, their offsets in the topic's history: 0 for frames without one, such as a gap).
Deliver = Callable[[str, list[bytes], list[int]], Awaitable[None]]


class Outbox:
    def __init__(
        self,
        deliver: Deliver,
        *,
        flush_secs: float,
        max_frames: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deliver = deliver
        self.flush_secs = flush_secs
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.clock = clock
        self.pending: dict[str, tuple[list[bytes], list[int]]] = {}
        self.frames = 0
        self.bytes = 0
        self.stats = {"flushes": 0, "flushed_frames": 0, "largest_flush": 0, "failed_deliveries": 0}
        self._last_flush = float("-inf")
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, topic: str, frames: list[bytes], offsets: list[int] | None = None) -> None:
        """Queue one topic's frames (at these offsets) for the next flush; waits while the outbox is full."""
        while self.frames >= self.max_frames or self.bytes >= self.max_bytes:
            self._room.clear()
            await self._room.wait()
        queued = self.pending.get(topic)
        if queued is None:
            self.pending[topic] = queued = ([], [])
        queued[0].extend(frames)
        queued[1].extend(offsets if offsets is not None else [0] * len(frames))
        self.frames += len(frames)
        self.bytes += sum(len(frame) for frame in frames)
        self._ready.set()

    async def run(self) -> None:
        """Flush forever (a worker's task); never returns but by cancellation."""
        while True:
            await self._ready.wait()
            wait_secs = self._last_flush + self.flush_secs - self.clock()
            if wait_secs > 0:
                await asyncio.sleep(wait_secs)
            await self.flush()

    async def flush(self) -> None:
        """Fan out everything waiting now, topic by topic."""
        batch, frames = self.pending, self.frames
        self.pending, self.frames, self.bytes = {}, 0, 0
        self._ready.clear()
        self._room.set()
        if not batch:
            return
        # Measured from the start: a fan-out longer than the interval is followed at once by the next one.
        self._last_flush = self.clock()
        self.stats["flushes"] += 1
        self.stats["flushed_frames"] += frames
        self.stats["largest_flush"] = max(self.stats["largest_flush"], frames)
        for topic, (topic_frames, offsets) in batch.items():
            try:
                await self.deliver(topic, topic_frames, offsets)
            except asyncio.CancelledError:
                raise
            except Exception:
                # One topic's failure must not cost the others their events, nor stop the outbox: a stopped
                # outbox would fill, then block the receive loop (subscription requests included).
                self.stats["failed_deliveries"] += 1
                logger.exception("fan-out of %d events on %s failed", len(topic_frames), topic)
