import asyncio

import pytest

from realtime.census import Census, MemoryCensus, RedisCensus
from tests.system.harness import RedisServer


@pytest.fixture(params=["memory", "redis"])
def store(request):
    if request.param == "memory":
        yield MemoryCensus()
        return
    server = RedisServer().start()
    yield RedisCensus(server.url)
    server.stop()


async def test_totals_sum_fresh_reports_and_each_change_is_announced_once(store):
    assert await store.areport("w1", {"video.1.likes": 2}, now=100.0, stale_before=85.0) == {"video.1.likes": 2}
    assert await store.areport("w2", {"video.1.likes": 3}, now=101.0, stale_before=86.0) == {"video.1.likes": 5}
    # Same counts again: nothing changed, nothing announced.
    assert await store.areport("w1", {"video.1.likes": 2}, now=105.0, stale_before=90.0) == {}
    assert await store.atotal("video.1.likes", stale_before=90.0) == 5
    # w2 stops reporting (died): its report goes stale and the next report drops it.
    assert await store.areport("w1", {"video.1.likes": 2}, now=120.0, stale_before=105.0) == {"video.1.likes": 2}
    assert await store.areport("w1", {"video.1.likes": 0}, now=121.0, stale_before=106.0) == {"video.1.likes": 0}


async def test_workers_racing_never_announce_the_same_total_twice(store):
    results = await asyncio.gather(*(store.areport(f"w{n}", {"t": 1}, now=1.0, stale_before=0.0) for n in range(10)))
    announced = [result["t"] for result in results if result]
    # Each report raised the total by one, and each new total was announced by exactly one worker.
    assert sorted(announced) == list(range(1, 11))
    assert await store.atotal("t", stale_before=0.0) == 10


def test_census_counts_matching_topics_and_reports_zero_once_after_the_last_leaves():
    census = Census(MemoryCensus(), r"video\.[0-9]+\.likes", 5.0)
    topics = {"video.1.likes": {1, 2}, "video.1.comments": {1}, "chat.x": {3}}
    assert census.counts(topics) == {"video.1.likes": 2}
    assert census.counts({}) == {"video.1.likes": 0}
    assert census.counts({}) == {}
    assert Census(MemoryCensus(), "", 5.0).counts(topics) == {}


async def test_a_topic_nobody_counts_any_more_is_forgotten():
    memory = MemoryCensus()
    await memory.areport("w1", {"video.9.likes": 1}, now=100.0, stale_before=85.0)
    await memory.areport("w1", {"video.9.likes": 0}, now=105.0, stale_before=90.0)
    await memory.areport("w1", {}, now=200.0, stale_before=185.0)
    assert memory.reports == {}
    assert memory.announced == {}


async def test_census_keys_in_redis_live_only_as_long_as_a_report_stays_fresh():
    server = RedisServer().start()
    try:
        store = RedisCensus(server.url)
        await store.areport("w1", {"video.9.likes": 1}, now=100.0, stale_before=85.0)
        from realtime import stores

        client = stores.aclient(server.url)
        for key in await client.keys("*census*"):
            assert 0 < await client.ttl(key) <= 16  # three 5 s intervals and a second; it was an hour
    finally:
        server.stop()
