"""Caps on streams open at once, per address and per member: in process, and across workers in Redis."""

from typing import Any

import pytest

from realtime import caps
from realtime.caps import CapReached, Holders, MemoryCaps, RedisCaps


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, settings: Any) -> MemoryCaps | RedisCaps:
    if request.param == "memory":
        return MemoryCaps()
    settings.REDIS_URL = request.getfixturevalue("redis_url")
    settings.REDIS_KEY_PREFIX = f"caps-{request.node.name}"
    return RedisCaps()


def holders(address: str = "10.0.0.1", member: int | None = None, per_address: int = 2, per_member: int = 1):
    entries = [("address", address, per_address)] + ([("member", str(member), per_member)] if member else [])
    return Holders(tuple(entries))


async def test_past_the_cap_a_stream_is_refused_until_one_closes(store: MemoryCaps | RedisCaps) -> None:
    await store.aacquire(holders(), "w1", "a")
    await store.aacquire(holders(), "w2", "b")  # another worker: the count is shared
    await store.abeat("w1")
    await store.abeat("w2")
    with pytest.raises(CapReached, match="REALTIME_MAX_STREAMS_PER_ADDRESS"):
        await store.aacquire(holders(), "w1", "c")
    await store.arelease(holders(), "w2", "b")
    await store.aacquire(holders(), "w1", "c")
    # Another address is another holder.
    await store.aacquire(holders("10.0.0.2"), "w1", "d")


async def test_the_member_cap_refuses_without_taking_an_address_place(store: MemoryCaps | RedisCaps) -> None:
    await store.aacquire(holders(member=7), "w1", "a")
    await store.abeat("w1")
    with pytest.raises(CapReached, match="REALTIME_MAX_STREAMS_PER_MEMBER"):
        await store.aacquire(holders(member=7), "w1", "b")
    # The refused stream took no address place: one anonymous stream still fits (cap 2).
    await store.aacquire(holders(), "w1", "c")


async def test_places_held_by_a_worker_that_stopped_beating_are_given_back(settings: Any, redis_url: str) -> None:
    settings.REDIS_URL = redis_url
    settings.REDIS_KEY_PREFIX = "caps-dead-worker"
    store = RedisCaps()
    await store.aacquire(holders(), "dead", "a")
    await store.aacquire(holders(), "dead", "b")
    await store.abeat("alive")  # "dead" never beat (or its beat expired): SIGKILLed
    await store.aacquire(holders(), "alive", "c")
    assert store.stats["reclaimed"] == 2
    await store.aacquire(holders(), "alive", "d")
    with pytest.raises(CapReached):
        await store.aacquire(holders(), "alive", "e")


def test_the_caps_come_from_the_settings(settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "MAX_STREAMS": {"address": 5, "member": 0}}
    assert caps.Holders.of("1.2.3.4", 9).entries == (("address", "1.2.3.4", 5),)
    settings.REALTIME = {**settings.REALTIME, "MAX_STREAMS": {"address": 0, "member": 0}}
    assert caps.Holders.of("1.2.3.4", 9).entries == ()
