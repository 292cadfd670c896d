"""Group commit: one writer at a time, everyone who arrived meanwhile in the next batch, each their own result."""

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from likes.group_commit import GroupCommit
from tests.likes.conftest import wait_until_queued


class Writes:
    """A write function that records its batches; `hold` keeps the first batch open until released."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        self.batches.append(list(items))
        self.entered.set()
        self.hold.wait(5)
        return [ValueError(f"bad {item}") if item < 0 else item * 10 for item in items]


def _in_threads(commit: GroupCommit, items: list[int], results: dict[int, Any]) -> list[threading.Thread]:
    def run(item: int) -> None:
        try:
            results[item] = commit.submit(item)
        except Exception as exc:
            results[item] = exc

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return threads


def _first_then_others(commit: GroupCommit, writes: "Writes", first: int, others: list[int]) -> dict[int, Any]:
    """`first` is written alone and held open until `others` all wait behind it; then everything finishes."""
    writes.hold.clear()
    results: dict[int, Any] = {}
    threads = _in_threads(commit, [first], results)
    assert writes.entered.wait(5)
    threads += _in_threads(commit, others, results)
    wait_until_queued(commit, len(others))
    writes.hold.set()
    for thread in threads:
        thread.join(5)
    return results


def test_a_lone_caller_writes_at_once() -> None:
    writes = Writes()
    commit = GroupCommit(writes)
    assert commit.submit(4) == 40
    assert writes.batches == [[4]]


def test_callers_arriving_during_a_write_go_together_in_the_next_batch() -> None:
    writes = Writes()
    commit = GroupCommit(writes)
    results = _first_then_others(commit, writes, 1, [2, 3, 4])
    assert writes.batches[0] == [1]
    assert sorted(writes.batches[1]) == [2, 3, 4]
    assert len(writes.batches) == 2
    assert results == {1: 10, 2: 20, 3: 30, 4: 40}
    assert commit.stats == {"batches": 2, "items": 4, "largest_batch": 3}


def test_each_caller_gets_its_own_exception() -> None:
    writes = Writes()
    results = _first_then_others(GroupCommit(writes), writes, 1, [-2, 3])
    assert isinstance(results[-2], ValueError)
    assert results[3] == 30


def test_a_failed_write_fails_its_whole_batch_and_the_next_one_goes_on() -> None:
    calls: list[list[int]] = []

    def write(items: Sequence[int]) -> list[int]:
        calls.append(list(items))
        if len(calls) == 1:
            raise ConnectionError("database gone")
        return list(items)

    commit = GroupCommit(write)
    with pytest.raises(ConnectionError):
        commit.submit(1)
    assert commit.submit(2) == 2


def test_a_batch_holds_at_most_max_batch_items_and_the_writer_is_in_it() -> None:
    writes = Writes()
    results = _first_then_others(GroupCommit(writes, max_batch=2), writes, 1, [2, 3, 4, 5, 6])
    assert results == {n: n * 10 for n in range(1, 7)}
    assert all(len(batch) <= 2 for batch in writes.batches)
    assert sorted(item for batch in writes.batches for item in batch) == [1, 2, 3, 4, 5, 6]
