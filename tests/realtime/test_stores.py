"""realtime.stores: one URL, one key prefix, clients per event loop, one memory-or-Redis pattern."""

import asyncio
from typing import Any

from realtime import census, stores


class _Memory:
    pass


class _Redis:
    def __init__(self, url: str) -> None:
        self.url = url


def test_a_slot_holds_memory_without_redis_and_redis_with_it(settings: Any, redis_url: str) -> None:
    slot = stores.Slot(memory=_Memory, redis=_Redis)
    settings.REDIS_URL = ""
    assert isinstance(slot.get(), _Memory)
    assert slot.get() is slot.get()
    settings.REDIS_URL = redis_url  # setting_changed forgets every store
    found = slot.get()
    assert isinstance(found, _Redis)
    assert found.url == redis_url


def test_every_key_starts_with_the_deployments_prefix(settings: Any) -> None:
    settings.REDIS_KEY_PREFIX = "blue"
    assert stores.key("likes", 7, "window") == "blue:likes:7:window"


def test_async_clients_are_per_event_loop(settings: Any, redis_url: str) -> None:
    settings.REDIS_URL = redis_url

    async def client_of_this_loop() -> object:
        first = stores.aclient()
        assert stores.aclient() is first
        assert await first.ping()
        return first

    assert asyncio.run(client_of_this_loop()) is not asyncio.run(client_of_this_loop())


async def test_two_deployments_share_one_redis_without_seeing_each_other(settings: Any, redis_url: str) -> None:
    settings.REDIS_URL = redis_url
    counts = {"video.1.likes": 3}
    settings.REDIS_KEY_PREFIX = "blue"
    blue = census.RedisCensus()
    await blue.areport("worker-a", counts, now=100.0, stale_before=0.0)
    settings.REDIS_KEY_PREFIX = "green"
    green = census.RedisCensus()
    assert await green.atotal("video.1.likes", stale_before=0.0) == 0
    assert await blue.atotal("video.1.likes", stale_before=0.0) == 3
    keys = {key.decode() for key in await stores.aclient().keys("*")}
    assert "blue:census:video.1.likes" in keys
    assert not any(key.startswith("green:") for key in keys)
