"""Async group commit: one batch in flight, everyone who arrived meanwhile in the next, each their own result."""

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from likes.async_group_commit import AsyncGroupCommit


class Writes:
    """An async write that records its batches; `hold` keeps each batch open until set."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.hold = asyncio.Event()
        self.hold.set()
        self.entered = asyncio.Event()

    async def __call__(self, items: Sequence[int]) -> list[Any]:
        self.batches.append(list(items))
        self.entered.set()
        await self.hold.wait()
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


async def _until_queued(commit: AsyncGroupCommit, count: int) -> None:
    for _ in range(10_000):  # turns of the loop, not time: the callers only need to run up to their await
        if commit.queued() >= count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never {count} waiting")


async def _first_then_others(commit: AsyncGroupCommit, writes: Writes, first: int, others: list[int]) -> list[Any]:
    """`first` is written alone and held open until `others` all wait behind it; then everything finishes."""
    writes.hold.clear()
    tasks = [asyncio.ensure_future(commit.asubmit(first))]
    await writes.entered.wait()
    tasks += [asyncio.ensure_future(commit.asubmit(item)) for item in others]
    await _until_queued(commit, len(others))
    writes.hold.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_lone_caller_writes_at_once() -> None:
    writes = Writes()
    commit = AsyncGroupCommit(writes)
    assert await commit.asubmit(4) == 40
    assert writes.batches == [[4]]


async def test_callers_arriving_during_a_write_go_together_in_the_next_batch() -> None:
    writes = Writes()
    commit = AsyncGroupCommit(writes)
    assert await _first_then_others(commit, writes, 1, [2, 3, 4]) == [10, 20, 30, 40]
    assert writes.batches == [[1], [2, 3, 4]]
    assert commit.stats == {"async_batches": 2, "async_items": 4, "async_largest_batch": 3, "async_abandoned": 0}


async def test_each_caller_gets_its_own_exception() -> None:
    writes = Writes()
    results = await _first_then_others(AsyncGroupCommit(writes), writes, 1, [-2, 3])
    assert isinstance(results[1], ValueError)
    assert results[2] == 30


async def test_a_failed_write_fails_its_whole_batch_and_the_next_one_goes_on() -> None:
    calls: list[list[int]] = []

    async def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database gone")
        return list(items)

    commit = AsyncGroupCommit(write)
    with pytest.raises(ConnectionError):
        await commit.asubmit(1)
    assert await commit.asubmit(2) == 2


async def test_a_batch_holds_at_most_max_batch_items() -> None:
    writes = Writes()
    results = await _first_then_others(AsyncGroupCommit(writes, max_batch=2), writes, 1, [2, 3, 4, 5, 6])
    assert results == [n * 10 for n in range(1, 7)]
    assert writes.batches == [[1], [2, 3], [4, 5], [6]]


async def test_a_caller_that_gives_up_still_has_its_item_written_and_counted() -> None:
    writes = Writes()
    commit = AsyncGroupCommit(writes)
    writes.hold.clear()
    first = asyncio.ensure_future(commit.asubmit(1))
    await writes.entered.wait()
    impatient = asyncio.ensure_future(commit.asubmit(2))
    await _until_queued(commit, 1)
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    writes.hold.set()
    assert await first == 10
    assert await commit.asubmit(3) == 30
    assert writes.batches == [[1], [2], [3]]
    assert commit.stats["async_abandoned"] == 1


async def test_each_event_loop_has_its_own_queue_and_writer() -> None:
    writes = Writes()
    commit = AsyncGroupCommit(writes)
    assert await commit.asubmit(1) == 10
    # Another loop in another thread (what async_to_sync makes): its future is resolved on its own loop.
    assert await asyncio.to_thread(asyncio.run, commit.asubmit(2)) == 20
