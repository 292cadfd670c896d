"""Coalesce concurrent calls with lists of ids into one call at a time per event loop, so bursts cost one batch."""

import asyncio
import weakref
from collections.abc import Awaitable, Callable


class _Batch:
    __slots__ = ("done", "ids")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ids: dict[int, None] = {}  # ordered and deduplicated
        self.done: asyncio.Future[None] = loop.create_future()


class _LoopState:
    __slots__ = ("next", "task")

    def __init__(self) -> None:
        self.next: _Batch | None = None
        self.task: asyncio.Task[None] | None = None


class Coalescer:
    """Runs `job(ids)` for the ids of every caller, at most one job at a time per event loop.

    A call that finds no job running starts one on the next loop turn (callers of the same turn share it);
    calls arriving while a job runs join the next batch, which starts when it ends. Each caller returns when
    the batch holding its ids is done, and gets that batch's exception if it failed. A thousand streams
    opening at once thus cost a handful of store calls instead of a thousand.
    """

    def __init__(self, job: Callable[[list[int]], Awaitable[None]]) -> None:
        self.job = job
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    async def __call__(self, ids: list[int]) -> None:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        if state.next is None:
            state.next = _Batch(loop)
        batch = state.next
        batch.ids.update(dict.fromkeys(ids))
        if state.task is None:
            state.task = loop.create_task(self._drain(state), name="presence-coalesce")
        # Shielded: a caller cancelled while waiting must not cancel the batch the others wait for.
        await asyncio.shield(batch.done)

    async def _drain(self, state: _LoopState) -> None:
        try:
            while state.next is not None:
                batch, state.next = state.next, None
                try:
                    await self.job(list(batch.ids))
                except asyncio.CancelledError:
                    batch.done.cancel()
                    raise
                except Exception as exc:
                    batch.done.set_exception(exc)
                    # Marks it retrieved: the callers still get it; if all of them were cancelled, asyncio
                    # must not log it again as "never retrieved" (the job's own logging already ran).
                    batch.done.exception()
                else:
                    batch.done.set_result(None)
        finally:
            state.task = None
