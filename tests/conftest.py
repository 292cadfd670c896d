"""Fixtures for every test."""

from collections.abc import Iterator
from typing import Any

import pytest

from realtime import caps, limits, tokens
from tests.clocks import FakeClock, ManualScheduler


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    # Users and tokens are rolled back between tests; a cached user must not outlive them.
    tokens.reset_cache()
    yield
    tokens.reset_cache()


@pytest.fixture(autouse=True)
def _no_rate_limits(settings: Any) -> None:
    # Tests act faster than any member; the limits have their own tests (tests/realtime/test_limits.py),
    # which set the rates they check. Counters of the embedded default start empty in each test.
    settings.REALTIME = {
        **settings.REALTIME,
        "RATE_LIMITS": dict.fromkeys(settings.REALTIME["RATE_LIMITS"], ""),
        "MAX_STREAMS": {"address": 0, "member": 0},
    }
    limits._memory = limits.MemoryCounters()
    caps._caps.reset()


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A private redis-server for this module's tests (real Redis, nothing shared with other modules)."""
    from tests.system.harness import RedisServer

    server = RedisServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scheduler(clock: FakeClock) -> ManualScheduler:
    """Scheduled calls run only when the test advances the fake clock past them (coalescing windows)."""
    return ManualScheduler(clock)
