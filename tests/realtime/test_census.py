import asyncio
from types import SimpleNamespace

import pytest

from realtime.census import MAX_LISTED_MEMBERS, Census, MemoryCensus, RedisCensus, Tally
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
    assert await store.areport("w1", {"video.1.likes": 2}, now=100.0, stale_before=85.0) == {"video.1.likes": Tally(2)}
    assert await store.areport("w2", {"video.1.likes": 3}, now=101.0, stale_before=86.0) == {"video.1.likes": Tally(5)}
    # Same counts again: nothing changed, nothing announced.
    assert await store.areport("w1", {"video.1.likes": 2}, now=105.0, stale_before=90.0) == {}
    assert await store.atotal("video.1.likes", stale_before=90.0) == 5
    # w2 stops reporting (died): its report goes stale and the next report drops it.
    assert await store.areport("w1", {"video.1.likes": 2}, now=120.0, stale_before=105.0) == {"video.1.likes": Tally(2)}
    assert await store.areport("w1", {"video.1.likes": 0}, now=121.0, stale_before=106.0) == {"video.1.likes": Tally(0)}


async def test_workers_racing_never_announce_the_same_total_twice(store):
    results = await asyncio.gather(*(store.areport(f"w{n}", {"t": 1}, now=1.0, stale_before=0.0) for n in range(10)))
    announced = [result["t"].count for result in results if result]
    # Each report raised the total by one, and each new total was announced by exactly one worker.
    assert sorted(announced) == list(range(1, 11))
    assert await store.atotal("t", stale_before=0.0) == 10


async def test_members_are_the_union_of_fresh_reports_and_a_change_of_members_alone_is_announced(store):
    topic = "video.1.likes"
    # w1: two streams, member 7 and an anonymous one; w2: members 3 and 7 (7 watches from two workers).
    assert await store.areport("w1", {topic: 2}, now=100.0, stale_before=85.0, members={topic: [7]}) == {
        topic: Tally(2, (7,))
    }
    assert await store.areport("w2", {topic: 2}, now=101.0, stale_before=86.0, members={topic: [7, 3]}) == {
        topic: Tally(4, (3, 7))
    }
    assert await store.atally(topic, stale_before=86.0) == Tally(4, (3, 7))
    # The same count with another member (3 left, 5 came): announced though the count did not move.
    assert await store.areport("w2", {topic: 2}, now=102.0, stale_before=87.0, members={topic: [5, 7]}) == {
        topic: Tally(4, (5, 7))
    }
    # Nothing new: nothing announced.
    assert await store.areport("w1", {topic: 2}, now=103.0, stale_before=88.0, members={topic: [7]}) == {}
    # w2 dies: its members go with its stale report, 7 stays (w1 still lists it).
    assert await store.areport("w1", {topic: 2}, now=120.0, stale_before=105.0, members={topic: [7]}) == {
        topic: Tally(2, (7,))
    }
    # The last stream leaves: nobody counted, nobody listed.
    assert await store.areport("w1", {topic: 0}, now=121.0, stale_before=106.0) == {topic: Tally(0)}
    assert await store.atally(topic, stale_before=106.0) == Tally(0)


async def test_the_member_list_keeps_the_lowest_ids_up_to_its_bound(store):
    many = range(1, 2 * MAX_LISTED_MEMBERS + 1)
    await store.areport("w1", {"t": 300}, now=1.0, stale_before=0.0, members={"t": list(reversed(many))})
    changed = await store.areport("w2", {"t": 1}, now=1.0, stale_before=0.0, members={"t": [10**12]})
    # The count counts everyone; the list is bounded and stable (the lowest ids), so it does not flap.
    assert changed == {"t": Tally(301, tuple(range(1, MAX_LISTED_MEMBERS + 1)))}
    assert await store.atally("t", stale_before=0.0) == Tally(301, tuple(range(1, MAX_LISTED_MEMBERS + 1)))


def test_census_counts_matching_topics_and_reports_zero_once_after_the_last_leaves():
    census = Census(MemoryCensus(), r"video\.[0-9]+\.likes", 5.0)
    topics = {"video.1.likes": {1, 2}, "video.1.comments": {1}, "chat.x": {3}}
    assert census.counts(topics) == {"video.1.likes": 2}
    assert census.counts({}) == {"video.1.likes": 0}
    assert census.counts({}) == {}
    assert Census(MemoryCensus(), "", 5.0).counts(topics) == {}


def test_census_lists_signed_in_subscribers_once_and_counts_anonymous_ones_unlisted():
    def conn(member_id):
        return SimpleNamespace(member_id=member_id)

    topics = {"video.1.likes": [conn(9), conn(None), conn(4), conn(9)], "video.2.likes": [conn(None)]}
    assert Census.members(topics, ["video.1.likes", "video.2.likes"]) == {"video.1.likes": (4, 9)}


async def test_a_worker_reports_its_connections_members_and_the_store_announces_them():
    def conn(member_id):
        return SimpleNamespace(member_id=member_id)

    census = Census(MemoryCensus(), r"video\.[0-9]+\.likes", 5.0)
    hub_topics = {"video.1.likes": [conn(2), conn(None)], "video.1.comments": [conn(8)]}
    assert await census.areport("w1", hub_topics, now=100.0) == {"video.1.likes": Tally(2, (2,))}
    assert await census.areport("w1", {}, now=101.0) == {"video.1.likes": Tally(0)}


async def test_a_topic_nobody_counts_any_more_is_forgotten():
    memory = MemoryCensus()
    await memory.areport("w1", {"video.9.likes": 1}, now=100.0, stale_before=85.0, members={"video.9.likes": [4]})
    await memory.areport("w1", {"video.9.likes": 0}, now=105.0, stale_before=90.0)
    await memory.areport("w1", {}, now=200.0, stale_before=185.0)
    assert memory.reports == {}
    assert memory.announced == {}


async def test_census_keys_in_redis_live_only_as_long_as_a_report_stays_fresh():
    server = RedisServer().start()
    try:
        store = RedisCensus(server.url)
        await store.areport("w1", {"video.9.likes": 2}, now=100.0, stale_before=85.0, members={"video.9.likes": [4]})
        from realtime import stores

        client = stores.aclient(server.url)
        keys = await client.keys("*census*")
        assert len(keys) == 4  # counts, last total, members, last members
        for key in keys:
            assert 0 < await client.ttl(key) <= 16  # three 5 s intervals and a second; it was an hour
        # Without a signed-in watcher a topic keeps no member key at all.
        await store.areport("w1", {"video.9.likes": 1}, now=101.0, stale_before=86.0)
        assert sorted(k.decode() if isinstance(k, bytes) else k for k in await client.keys("*census*members*")) == []
    finally:
        server.stop()
