"""The typing store, memory and Redis alike: throttled starts, refreshes, stops and expiry, each mark taken once."""

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from messaging.indicators import MemoryStore, RedisStore

THROTTLE, TIMEOUT = 2.0, 6.0


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, settings: Any) -> Any:
    if request.param == "memory":
        return MemoryStore()
    settings.REDIS_KEY_PREFIX = f"test-{uuid.uuid4().hex}"
    return RedisStore(request.getfixturevalue("redis_url"))


def start(store: Any, at: float, conversation: int = 1, member: int = 7) -> bool:
    """Whether a start at `at` is announced."""
    return started(store, at, conversation, member).announced


def started(store: Any, at: float, conversation: int = 1, member: int = 7) -> Any:
    return store.start(conversation, member, now=at, throttle_secs=THROTTLE, timeout_secs=TIMEOUT)


async def test_a_start_is_announced_once_per_throttle_window_and_refreshes_in_between(store):
    assert started(store, 100.0) == (True, True, 0.0)
    assert started(store, 101.9) == (False, True, 0.0)
    assert start(store, 102.0)
    assert await store.atake_expired(107.0, 10) == []  # refreshed at 102: expires at 108
    assert await store.atake_expired(108.5, 10) == [(1, 7)]
    assert await store.atake_expired(200.0, 10) == []


async def test_a_stop_is_answered_once_and_a_start_right_after_it_stays_silent(store):
    assert start(store, 100.0)
    assert store.stop(1, 7)
    assert not store.stop(1, 7)
    # Inside the throttle: not announced, so no mark to stop or expire; the caller learns when to call again.
    assert started(store, 100.5) == (False, False, pytest.approx(1.5))
    assert not store.stop(1, 7)
    assert await store.atake_expired(1000.0, 10) == []


async def test_members_and_conversations_are_independent(store):
    assert start(store, 100.0, conversation=1, member=7)
    assert start(store, 100.0, conversation=1, member=8)
    assert start(store, 100.0, conversation=2, member=7)
    assert sorted(await store.atake_expired(106.0, 10)) == [(1, 7), (1, 8), (2, 7)]


async def test_a_sweep_takes_at_most_its_batch(store):
    for member in range(5):
        start(store, 100.0, member=member)
    first = await store.atake_expired(200.0, 3)
    second = await store.atake_expired(200.0, 3)
    assert len(first) == 3
    assert len(second) == 2
    assert sorted(first + second) == [(1, member) for member in range(5)]


async def test_concurrent_sweepers_and_stoppers_take_each_mark_exactly_once(store):
    for member in range(200):
        start(store, 100.0, member=member)
    with ThreadPoolExecutor(4) as pool:
        stopped = list(pool.map(lambda member: store.stop(1, member), range(0, 200, 2)))
    swept = await asyncio.gather(*(store.atake_expired(200.0, 1000) for _ in range(4)))
    taken = [mark for marks in swept for mark in marks]
    assert sum(stopped) == 100
    assert sorted(taken) == [(1, member) for member in range(1, 200, 2)]
