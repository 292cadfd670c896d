"""Both stores against the same table, and the Redis store's atomicity against a real, private redis-server."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from presence.status import OFFLINE, ONLINE, MemberStatus
from presence.store import MemoryStore, RedisStore
from tests.presence.cases import CASES, OFFLINE_AFTER_SECS, Beat, Case, at


def _redis_store(url: str, prefix: str, **kwargs: int) -> RedisStore:
    return RedisStore(url, key_prefix=prefix, **kwargs)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    # A small batch makes the sweep loop over several Lua calls, as it does with many members.
    redis_store = _redis_store(request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}", sweep_batch=2)
    yield redis_store
    await redis_store.aclose()


def _key(row: MemberStatus) -> tuple:
    return (row.status, row.member, row.last_seen, row.changed_at)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_table(store: MemoryStore | RedisStore, case: Case) -> None:
    for step, expected in case.steps:
        if isinstance(step, Beat):
            changes = await store.abeat(list(step.members), step.at)
        else:
            changes = await store.asweep(step.at, OFFLINE_AFTER_SECS)
        assert sorted(map(_key, changes), key=lambda row: row[1]) == list(expected), step
    members = list(case.final)
    for rows in (await store.astatuses(members), await asyncio.to_thread(store.statuses, members)):
        assert {row.member: (row.status, row.last_seen, row.changed_at) for row in rows} == case.final


async def test_online_lists_every_online_member_with_its_changed_at(store: MemoryStore | RedisStore) -> None:
    await store.abeat([1, 2, 3], at(0))
    await store.abeat([2], at(5))
    await store.asweep(at(10.5), OFFLINE_AFTER_SECS)  # 1 and 3 go offline
    await store.abeat([4], at(6))
    rows = await store.aonline()
    assert [(row.member, row.status, row.last_seen, row.changed_at) for row in rows] == [
        (4, ONLINE, at(6), at(6)),
        (2, ONLINE, at(5), at(0)),
    ]


async def test_statuses_of_nobody_and_of_strangers(store: MemoryStore | RedisStore) -> None:
    assert await store.astatuses([]) == []
    assert await store.astatuses([99]) == [MemberStatus(99, OFFLINE, None, None)]


async def test_a_claim_is_won_once_per_period(store: MemoryStore | RedisStore) -> None:
    assert await store.aclaim("job", 30)
    assert not await store.aclaim("job", 30)
    assert await store.aclaim("other-job", 30)


MEMBERS = list(range(1, 301))


async def test_concurrent_sweepers_take_each_member_offline_exactly_once(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    # Four workers' stores, each with its own connection; small batches interleave their Lua calls.
    stores = [_redis_store(redis_url, prefix, sweep_batch=7) for _ in range(4)]
    try:
        await stores[0].abeat(MEMBERS, at(0))
        for s in stores:  # connect each first, so none gets a head start at the race
            assert await s.asweep(at(0), OFFLINE_AFTER_SECS) == []
        results = await asyncio.gather(*(s.asweep(at(OFFLINE_AFTER_SECS + 1), OFFLINE_AFTER_SECS) for s in stores))
        taken = [row.member for rows in results for row in rows]
        assert sorted(taken) == MEMBERS, "every member offline exactly once, across all sweepers"
        assert sum(1 for rows in results if rows) >= 2, "the sweepers did race"
        assert await stores[1].asweep(at(OFFLINE_AFTER_SECS + 2), OFFLINE_AFTER_SECS) == []
    finally:
        for s in stores:
            await s.aclose()


def test_concurrent_sweepers_in_memory_take_each_member_offline_exactly_once() -> None:
    store = MemoryStore()
    store.beat(MEMBERS, at(0))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: store.sweep(at(OFFLINE_AFTER_SECS + 1), OFFLINE_AFTER_SECS), range(4)))
    assert sorted(row.member for rows in results for row in rows) == MEMBERS


async def test_a_heartbeat_racing_a_sweep_never_leaves_a_member_offline_unannounced(redis_url: str) -> None:
    prefix = f"test-{uuid.uuid4().hex}"
    sweeper, beater = _redis_store(redis_url, prefix, sweep_batch=5), _redis_store(redis_url, prefix, beat_batch=5)
    try:
        await beater.abeat(MEMBERS, at(0))
        assert await sweeper.asweep(at(0), OFFLINE_AFTER_SECS) == []  # connected before the race
        now = at(OFFLINE_AFTER_SECS + 1)
        gone, back = await asyncio.gather(sweeper.asweep(now, OFFLINE_AFTER_SECS), beater.abeat(MEMBERS, now))
        offline = {row.member: row for row in gone}
        online = {row.member: row for row in back}
        # Each member either went offline and came back (both announced, in changed_at order), or never left.
        assert set(online) == set(offline)
        for member, row in online.items():
            assert row.changed_at > offline[member].changed_at
        rows = await beater.astatuses(MEMBERS)
        assert all(row.status == ONLINE and row.last_seen == now for row in rows)
        assert len(offline) > 0, "the sweep ran first for some members (otherwise nothing raced)"
    finally:
        await sweeper.aclose()
        await beater.aclose()


async def test_a_store_follows_the_running_event_loop(redis_url: str) -> None:
    store = _redis_store(redis_url, f"test-{uuid.uuid4().hex}")
    await store.abeat([1], at(0))

    def in_another_loop() -> list[MemberStatus]:
        return asyncio.run(store.astatuses([1]))

    assert [row.status for row in await asyncio.to_thread(in_another_loop)] == [ONLINE]
    assert [row.status for row in await store.astatuses([1])] == [ONLINE]
    await store.aclose()
