"""Leases are renewed a slice per step: every topic once per cycle, none ever lapses, and no step is a burst."""

import asyncio
import random
from collections import Counter

import pytest
from channels.layers import InMemoryChannelLayer
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime.dispatcher import Dispatcher, group_name
from realtime.registry import RENEW_BATCH, Registry, RegistryUnavailable, renewal_steps

STEPS = 20  # steps per cycle; a cycle is a third of a lease
LEASE = 3 * STEPS  # in steps: the time unit of these tests


class LeaseStore:
    """The dispatcher's registration calls against a dict of lease stamps, on a clock the test moves.

    A membership whose stamp is older than LEASE has lapsed, as channels-redis prunes it; `down` makes every
    call fail as Redis would; `hold` keeps each renewal from landing until it is set.
    """

    def __init__(self) -> None:
        self.now = 0
        self.stamps: dict[str, int] = {}  # topic -> when its lease was last added or renewed (one worker)
        self.renewals: dict[str, list[int]] = {}
        self.refresh_sizes: list[int] = []
        self.down = False
        self.hold: asyncio.Event | None = None
        self.holding = asyncio.Event()  # set once a renewal waits for `hold`

    async def _enter(self) -> None:
        await asyncio.sleep(0)
        if self.down:
            raise RedisConnectionError("Connection refused")

    async def aregister(self, topic: str, channel: str) -> None:
        await self._enter()
        self.stamps[topic] = self.now

    async def aderegister(self, topic: str, channel: str) -> None:
        await self._enter()
        self.stamps.pop(topic, None)

    async def arefresh(self, topics: list[str], channel: str) -> None:
        await self._enter()
        if self.hold is not None:
            self.holding.set()
            await self.hold.wait()
        self.refresh_sizes.append(len(topics))
        for topic in topics:
            self.stamps[topic] = self.now
            self.renewals.setdefault(topic, []).append(self.now)

    def live(self) -> set[str]:
        return {topic for topic, stamp in self.stamps.items() if self.now - stamp < LEASE}


def make(hub: set[str]) -> tuple[Registry, LeaseStore]:
    store = LeaseStore()
    return Registry(store, "w1", lambda: hub, renew_steps=STEPS), store  # type: ignore[arg-type]


async def run_steps(registry: Registry, store: LeaseStore, count: int) -> None:
    for _ in range(count):
        store.now += 1
        await registry.arenew()


def test_a_step_comes_about_every_second_and_a_cycle_is_a_third_of_a_lease() -> None:
    assert renewal_steps(60.0) == 20
    assert renewal_steps(1200.0) == 400
    assert renewal_steps(1.0) == 1  # a step every third of a second: never fewer than one per cycle
    assert renewal_steps(3.0, step_secs=0.25) == 4


async def test_every_registered_topic_is_renewed_exactly_once_per_cycle_in_small_calls() -> None:
    hub = {f"t.{n}" for n in range(10_000)}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    await run_steps(registry, store, 3 * STEPS)
    for topic in hub:
        first, *rest = store.renewals[topic]
        assert first <= STEPS
        assert [b - a for a, b in zip(store.renewals[topic], rest, strict=False)] == [STEPS, STEPS]
    # 10,000 topics over 20 steps: about 500 a step, never one burst of all of them.
    per_step = Counter(when for times in store.renewals.values() for when in times)
    assert len(per_step) == 3 * STEPS
    assert max(per_step.values()) <= 2 * len(hub) / STEPS
    assert max(store.refresh_sizes) <= RENEW_BATCH
    assert sum(store.refresh_sizes) == 3 * len(hub)
    assert len(store.refresh_sizes) <= 3 * STEPS * 2


async def test_topics_added_mid_cycle_are_renewed_within_two_cycles() -> None:
    hub = {f"t.{n}" for n in range(100)}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    await run_steps(registry, store, 7)
    late = {f"late.{n}" for n in range(100)}
    hub |= late
    await registry.async_topics(sorted(late))
    added_at = store.now
    await run_steps(registry, store, 2 * STEPS)
    for topic in late:
        assert store.renewals[topic], topic
        assert store.renewals[topic][0] - added_at <= 2 * STEPS
    assert late <= store.live()


async def test_a_topic_no_longer_hosted_is_withdrawn_within_a_cycle() -> None:
    hub = {"a.b", "c.d", "e.f"}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    hub.discard("c.d")  # left without its own deregistration (as after a failed one)
    await run_steps(registry, store, STEPS)
    assert set(store.stamps) == {"a.b", "e.f"}
    assert registry.registered == {"a.b", "e.f"}


async def test_a_hosted_topic_nobody_registered_is_registered_within_a_cycle_and_positioned() -> None:
    hub = {"a.b"}
    positioned: list[str] = []
    store = LeaseStore()
    registry = Registry(
        store,  # type: ignore[arg-type]
        "w1",
        lambda: hub,
        renew_steps=STEPS,
        positioned=lambda topic, position: positioned.append(topic),
    )
    await run_steps(registry, store, STEPS)
    assert set(store.stamps) == {"a.b"}
    assert registry.registered == {"a.b"}
    assert positioned == ["a.b"]


async def test_a_failed_renewal_puts_the_registry_out_of_step_until_the_full_resync() -> None:
    hub = {f"t.{n}" for n in range(200)}
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    store.down = True
    with pytest.raises(RegistryUnavailable):
        await run_steps(registry, store, STEPS)
    assert registry.out_of_step
    assert registry.stats["registry_failures"] == 1
    renewed = len(store.refresh_sizes)
    await run_steps(registry, store, STEPS)  # out of step: the steps leave it to the repair
    assert len(store.refresh_sizes) == renewed
    store.down = False
    await registry.arepair()
    assert not registry.out_of_step
    assert store.live() == hub
    await run_steps(registry, store, 2 * STEPS)
    assert store.live() == hub


async def test_a_renewal_landing_after_its_topic_was_let_go_is_withdrawn_again() -> None:
    hub = {f"t.{n}" for n in range(40)}
    store = LeaseStore()
    registry = Registry(store, "w1", lambda: hub, renew_steps=1)  # type: ignore[arg-type]
    await registry.async_topics(sorted(hub))
    store.hold = asyncio.Event()
    step = asyncio.create_task(registry.arenew())
    await store.holding.wait()
    # The renewal is in flight: every topic is let go and deregistered meanwhile, then the renewal lands.
    gone = sorted(hub)
    hub.clear()
    await registry.async_topics(gone)
    assert not store.stamps
    store.hold.set()
    await step
    assert not store.stamps, "what the late renewal wrote back must be withdrawn again"
    assert not registry.registered


async def test_no_lease_ever_lapses_under_churn_across_many_cycles() -> None:
    rng = random.Random(17)
    universe = [f"t.{n}" for n in range(500)]
    hub = set(rng.sample(universe, 250))
    registry, store = make(hub)
    await registry.async_topics(sorted(hub))
    for _ in range(10 * STEPS):
        store.now += 1
        # Some topics gain their first viewer, some lose their last, each through its own registration change.
        changed = rng.sample(universe, 5)
        for topic in changed:
            if topic in hub:
                hub.discard(topic)
            else:
                hub.add(topic)
        await registry.async_topics(changed)
        await registry.arenew()
        assert store.live() == hub, store.now
        assert set(store.stamps) == hub
        assert all(store.now - stamp <= 2 * STEPS for stamp in store.stamps.values())


async def test_the_in_memory_layer_keeps_every_membership_fresh_and_drops_the_stale_one() -> None:
    layer = InMemoryChannelLayer(group_expiry=60)
    dispatcher = Dispatcher(layer)
    hub = {"a.b", "c.d"}
    registry = Registry(dispatcher, "w1!x", lambda: hub, renew_steps=4)
    await registry.async_topics(sorted(hub))
    for topic in hub:
        layer.groups[group_name(topic)]["w1!x"] = 0.0  # as if its lease were about to lapse
    hub.discard("c.d")
    for _ in range(4):
        await registry.arenew()
    assert layer.groups[group_name("a.b")]["w1!x"] > 0.0
    assert "w1!x" not in layer.groups.get(group_name("c.d"), {})
