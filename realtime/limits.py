"""Rate limits enforced across workers: how often one client may do one thing, answered 429 past that.

One counter per (scope, who, time window), in Redis when REDIS_URL is set (so the limit holds across every
worker: one INCR and one EXPIRE, pipelined, on the shard of the counter's key) or in this process on the
embedded default. A fixed window is
enough here: the goal is to stop floods (a password guesser, a member hammering like, a script opening
streams), not to shape traffic; a client may burst to twice the rate across a window boundary, never more.

Rates are "N/s", "N/m" or "N/h" (REALTIME RATE_LIMITS, one per scope); "" or "0" turns a scope off. `who`
is a member id or a client address (`client_address`, which believes X-Forwarded-For only when the proxy
headers are trusted).
"""

import math
import threading
import time
from dataclasses import dataclass

from django.conf import settings

from realtime import conf, stores

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
# The wall clock every worker shares (the windows are the same on every worker); tests pass their own.
clock = time.time


@dataclass(frozen=True)
class Rate:
    count: int
    per_secs: float

    def __str__(self) -> str:
        return f"{self.count} per {self.per_secs:g} s"


def parse_rate(text: str) -> Rate | None:
    """'10/s' -> Rate(10, 1.0); '' or '0' -> None (no limit). Raises ValueError for anything else."""
    text = text.strip()
    if text in ("", "0"):
        return None
    count, _, unit = text.partition("/")
    if not count.isdigit() or unit not in _UNITS or int(count) < 1:
        raise ValueError(f"rate {text!r} is not N/s, N/m or N/h")
    return Rate(int(count), _UNITS[unit])


def rate_for(scope: str) -> Rate | None:
    """The configured rate of a scope (REALTIME RATE_LIMITS), or None when that scope is not limited."""
    return parse_rate(str(conf.get("RATE_LIMITS").get(scope, "")))


class Limited(Exception):
    """Past the rate: retry after `retry_after_secs`."""

    def __init__(self, scope: str, rate: Rate, retry_after_secs: float) -> None:
        super().__init__(f"too many requests ({scope}: at most {rate}); retry in {math.ceil(retry_after_secs)} s")
        self.scope = scope
        self.rate = rate
        self.retry_after_secs = retry_after_secs


class MemoryCounters:
    """One process (the embedded default). Windows that ended are dropped as new ones start."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, int], int] = {}
        self._lock = threading.Lock()

    def incr(self, key: tuple[str, str, int]) -> int:
        with self._lock:
            if len(self._counts) > 100_000:
                # Bounded: a flood of distinct clients cannot grow this without limit; dropping early only errs
                # towards letting a request through.
                self._counts.clear()
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
            return count


_memory = MemoryCounters()


@dataclass(frozen=True)
class _Hit:
    """One action to count: its window's key and end; `judge` decides once the window's count is known."""

    scope: str
    rate: Rate
    now: float
    window: tuple[str, str, int]
    ends: float

    @property
    def key(self) -> str:
        return stores.key("limit", *self.window)

    @property
    def ttl_secs(self) -> int:
        return max(1, math.ceil(self.rate.per_secs)) + 1

    def judge(self, count: int) -> None:
        if count > self.rate.count:
            raise Limited(self.scope, self.rate, self.ends - self.now)


def _plan(scope: str, who: str, now: float | None, rate: Rate | None) -> _Hit | None:
    rate = rate_for(scope) if rate is None else rate
    if rate is None:
        return None
    now = clock() if now is None else now
    index = int(now // rate.per_secs)
    return _Hit(scope, rate, now, (scope, who, index), (index + 1) * rate.per_secs)


def hit(scope: str, who: str, *, now: float | None = None, rate: Rate | None = None) -> None:
    """Sync: count one action of `who` in `scope`; raises Limited past the scope's rate. No-op when off.

    `rate`: an app's own scope and rate (its settings, not REALTIME RATE_LIMITS); None: the configured one.
    """
    planned = _plan(scope, who, now, rate)
    if planned is None:
        return
    if not stores.url():
        planned.judge(_memory.incr(planned.window))
        return
    with stores.client(stores.server_for(planned.key)).pipeline(transaction=False) as pipe:
        pipe.incr(planned.key)
        pipe.expire(planned.key, planned.ttl_secs)
        planned.judge(int(pipe.execute()[0]))


async def ahit(scope: str, who: str, *, now: float | None = None, rate: Rate | None = None) -> None:
    """Async twin of hit: one pipelined round trip on the loop's Redis client; raises Limited."""
    planned = _plan(scope, who, now, rate)
    if planned is None:
        return
    if not stores.url():
        planned.judge(_memory.incr(planned.window))
        return
    async with stores.aclient(stores.server_for(planned.key)).pipeline(transaction=False) as pipe:
        pipe.incr(planned.key)
        pipe.expire(planned.key, planned.ttl_secs)
        planned.judge(int((await pipe.execute())[0]))


def client_address(remote: str | None, forwarded_for: str) -> str:
    """The client's address: the peer's, or the last hop of X-Forwarded-For when TRUST_PROXY_HEADERS is set
    (the hop the proxy itself added; anything before it the client could have written)."""
    if getattr(settings, "TRUST_PROXY_HEADERS", False) and forwarded_for:
        return forwarded_for.split(",")[-1].strip() or (remote or "unknown")
    return remote or "unknown"
