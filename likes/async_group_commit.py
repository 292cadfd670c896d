"""Group commit for async callers: one batch in flight per event loop; whoever arrives meanwhile goes in the next.

The asyncio twin of likes.group_commit (which serves request threads). A caller queues its item and awaits a
future; if no batch is being written, a writer task starts and writes everything queued, one `awrite(items)`
(one database round trip, one transaction) per batch, until the queue is empty. Each caller's future gets its
own result or exception, so a request still answers only after its own item committed. An idle process writes
at once (a batch of one, no added wait); a busy one writes fewer, larger batches, so the rate is bounded by
batch size over commit time rather than by commits per second.

State is per event loop (a process serving under Daphne has one; tests and async_to_sync make others), so a
future is only ever resolved on the loop that awaits it. A caller that is cancelled while waiting (its client
left) does not withdraw its item: it may already be in the batch being written, and a like that was stored is
counted (`abandoned`), never silently unsaid.
"""

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")


class _Pending:
    """One loop's queue and its writer task (None while nothing is being written)."""

    __slots__ = ("queue", "writer")

    def __init__(self) -> None:
        self.queue: list[tuple[Any, asyncio.Future[Any]]] = []
        self.writer: asyncio.Task[None] | None = None


class AsyncGroupCommit(Generic[Item]):
    """`awrite(items)` returns one result or exception per item, in order; one call in flight per loop."""

    def __init__(self, awrite: Callable[[Sequence[Item]], Awaitable[list[Any]]], *, max_batch: int = 500) -> None:
        self.awrite = awrite
        self.max_batch = max_batch
        self.stats = {"async_batches": 0, "async_items": 0, "async_largest_batch": 0, "async_abandoned": 0}
        # Items queued behind the batch being written, on every loop: read by `awrite`'s thread to know whether
        # another batch follows at once (likes.db keeps its connection then). Only the loops write it.
        self.waiting = 0
        self._pending: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pending] = weakref.WeakKeyDictionary()

    async def asubmit(self, item: Item) -> Any:
        """Async: write `item` in the next batch and return its result; raises its exception."""
        loop = asyncio.get_running_loop()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = _Pending()
        future: asyncio.Future[Any] = loop.create_future()
        pending.queue.append((item, future))
        self.waiting += 1
        if pending.writer is None:
            pending.writer = loop.create_task(self._drain(pending), name="likes-group-commit")
        try:
            return await future
        except asyncio.CancelledError:
            if not future.cancelled():
                raise
            # Our own wait was cancelled, not the write: the item is still written (see the module doc).
            self.stats["async_abandoned"] += 1
            raise

    def queued(self) -> int:
        """Items waiting behind the batch being written, on the running loop (tests, stats)."""
        pending = self._pending.get(asyncio.get_running_loop())
        return 0 if pending is None else len(pending.queue)

    async def _drain(self, pending: _Pending) -> None:
        try:
            while pending.queue:
                batch = pending.queue[: self.max_batch]
                del pending.queue[: self.max_batch]
                self.waiting -= len(batch)
                await self._write(batch)
        finally:
            pending.writer = None
            # Cancelled (the loop is closing) with items still queued: they must not wait for ever.
            for _item, future in pending.queue:
                if not future.done():
                    future.set_exception(RuntimeError("the like writer stopped before this like was written"))
            self.waiting -= len(pending.queue)
            pending.queue.clear()

    async def _write(self, batch: list[tuple[Any, "asyncio.Future[Any]"]]) -> None:
        self.stats["async_batches"] += 1
        self.stats["async_items"] += len(batch)
        self.stats["async_largest_batch"] = max(self.stats["async_largest_batch"], len(batch))
        try:
            outcomes = await self.awrite([item for item, _ in batch])
        except asyncio.CancelledError:
            for _item, future in batch:
                if not future.done():
                    future.set_exception(RuntimeError("the like writer was cancelled while writing this like"))
            raise
        except Exception as exc:
            # The whole batch failed (one transaction): every caller gets the error; the next batch goes on.
            logger.warning("a batch of %d likes failed: %r", len(batch), exc)
            for _item, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_item, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # its caller was cancelled; the item is written all the same
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
