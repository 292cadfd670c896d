"""Group commit for request threads: whoever arrives while a batch is being written waits and goes in the next.

A like is one short write transaction, and on a hot video most of a like's cost is the transaction itself
(on SQLite, its single writer and its fsync). Request threads hand their item to a GroupCommit; when no
batch is being written the caller becomes the writer of everything queued so far, otherwise it waits; the
writer hands each caller its own result (or exception) and wakes them. An idle process writes at once (a
batch of one, no added latency); a busy one writes fewer, larger transactions. Each caller still returns
only after its item is committed.

Threads only (Django's sync views run one per request under ASGI); no asyncio here.
"""

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


class _Ticket:
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Any) -> None:
        self.item = item
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommit(Generic[Item]):
    """`write(items)` returns one result or exception per item, in order; it runs in one caller's thread."""

    def __init__(self, write: Callable[[Sequence[Item]], list[Any]], *, max_batch: int = 500) -> None:
        self.write = write
        self.max_batch = max_batch
        self.stats = {"batches": 0, "items": 0, "largest_batch": 0}
        self._queue: list[_Ticket] = []
        self._writing = False
        self._changed = threading.Condition()

    def submit(self, item: Item) -> Any:
        """Write `item` in the next batch and return its result; raises its exception."""
        ticket = _Ticket(item)
        with self._changed:
            self._queue.append(ticket)
            while not ticket.done and self._writing:
                self._changed.wait()
            if ticket.done:
                return _outcome(ticket)
            self._writing = True
            # The writer's own item goes in, with the oldest of the others: the rest wait for the next batch.
            self._queue.remove(ticket)
            batch = [*self._queue[: self.max_batch - 1], ticket]
            del self._queue[: self.max_batch - 1]
        try:
            self._write(batch)
        finally:
            with self._changed:
                self._writing = False
                for written in batch:
                    written.done = True
                self._changed.notify_all()
        return _outcome(ticket)

    def _write(self, batch: list[_Ticket]) -> None:
        self.stats["batches"] += 1
        self.stats["items"] += len(batch)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(batch))
        try:
            outcomes = self.write([ticket.item for ticket in batch])
        except BaseException as exc:
            for ticket in batch:
                ticket.error = exc
            return
        for ticket, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                ticket.error = outcome
            else:
                ticket.result = outcome


def _outcome(ticket: _Ticket) -> Any:
    if ticket.error is not None:
        raise ticket.error
    return ticket.result
