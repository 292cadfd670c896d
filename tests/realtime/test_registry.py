"""The registry and the hub converge whatever the store does: failures are explicit, then repaired."""

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.registry import Registry, RegistryUnavailable


class FakeStore:
    """The dispatcher's registration calls, against a dict; `down` makes every call fail as Redis would."""

    def __init__(self) -> None:
        self.groups: dict[str, set[str]] = {}
        self.down = False
        self.in_flight = 0
        self.most_in_flight = 0

    async def _enter(self) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0)
        self.in_flight -= 1
        if self.down:
            raise RedisConnectionError("Connection refused")

    async def aregister(self, topic: str, channel: str) -> None:
        await self._enter()
        self.groups.setdefault(topic, set()).add(channel)

    async def aderegister(self, topic: str, channel: str) -> None:
        await self._enter()
        self.groups.get(topic, set()).discard(channel)

    async def arefresh(self, topics: list[str], channel: str) -> None:
        await self._enter()
        for topic in topics:
            self.groups.setdefault(topic, set()).add(channel)

    def hosts(self, channel: str) -> set[str]:
        return {topic for topic, members in self.groups.items() if channel in members}


def make(hub: set[str], **kwargs: int) -> tuple[Registry, FakeStore]:
    store = FakeStore()
    return Registry(store, "w1", lambda: hub, **kwargs), store  # type: ignore[arg-type]


async def test_a_refused_registration_is_explicit_and_repaired_when_the_store_returns() -> None:
    hub = {"a.b"}
    registry, store = make(hub)
    store.down = True
    with pytest.raises(RegistryUnavailable):
        await registry.async_topics(["a.b"])
    assert registry.out_of_step
    with pytest.raises(RegistryUnavailable):
        await registry.arepair()  # still down: still out of step
    store.down = False
    await registry.arepair()
    assert not registry.out_of_step
    assert store.hosts("w1") == {"a.b"}
    assert registry.stats["registry_resyncs"] == 1


async def test_a_store_restarted_empty_is_refilled_by_the_resync() -> None:
    hub = {"a.b", "c.d"}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    store.groups.clear()  # FLUSHALL, or a restart without persistence
    await registry.aresync()
    assert store.hosts("w1") == hub


async def test_the_resync_withdraws_what_the_hub_no_longer_hosts() -> None:
    hub = {"a.b", "c.d"}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    store.down = True
    hub.discard("c.d")
    with pytest.raises(RegistryUnavailable):
        await registry.async_topics(["c.d"])  # the deregistration fails
    store.down = False
    await registry.arepair()
    assert store.hosts("w1") == {"a.b"}
    assert registry.registered == {"a.b"}


async def test_registry_calls_in_flight_are_bounded() -> None:
    hub = {f"t.{n}" for n in range(200)}
    registry, store = make(hub, max_concurrent_calls=8)
    await registry.async_topics(sorted(hub))
    assert store.hosts("w1") == hub
    assert store.most_in_flight <= 8
