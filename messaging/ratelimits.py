"""Messaging's rate limits (messages, typing calls, new conversations): counted across workers, 429 past them.

realtime.limits reads its rates from REALTIME RATE_LIMITS, whose scopes the core fixes; these scopes belong to
this app, so their rates live in MESSAGING RATE_LIMITS (messaging.conf) and are counted here with the core's
parts: the same fixed windows, one INCR + EXPIRE in Redis (in this process on the embedded default), and the
same 429 JSON with Retry-After (livesite.errors.RateLimited). A Redis that does not answer lets the action
through (logged): a limiter must not take messaging down with it.
"""

import logging
import math

from redis.exceptions import RedisError

from livesite.errors import RateLimited
from messaging import conf
from realtime import limits, stores

logger = logging.getLogger(__name__)

_memory = limits.MemoryCounters()


def hit(scope: str, who: str, *, now: float | None = None) -> None:
    """Sync: count one action of `who` in messaging's `scope`; raises limits.Limited past its rate."""
    rate = conf.rate(scope)
    if rate is None:
        return
    now = limits.clock() if now is None else now
    index = int(now // rate.per_secs)
    window = (f"messaging-{scope}", who, index)
    if not stores.url():
        count = _memory.incr(window)
    else:
        key = stores.key("limit", *window)
        with stores.client().pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, max(1, math.ceil(rate.per_secs)) + 1)
            count = int(pipe.execute()[0])
    if count > rate.count:
        raise limits.Limited(scope, rate, (index + 1) * rate.per_secs - now)


def check_rate(scope: str, member_id: int) -> None:
    """Sync, for DRF views: count one action of a member; raise RateLimited (429) past the scope's rate."""
    try:
        hit(scope, f"member:{member_id}")
    except limits.Limited as exc:
        raise RateLimited(wait=exc.retry_after_secs, detail=str(exc)) from None
    except (RedisError, OSError) as exc:
        logger.warning("messaging rate limit %s not counted (Redis: %s); the action goes through", scope, exc)


def reset() -> None:
    """Forget the in-process counters (tests)."""
    global _memory
    _memory = limits.MemoryCounters()
