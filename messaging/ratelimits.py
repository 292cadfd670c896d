"""Messaging's rate limits (messages, typing calls, new conversations): counted across workers, 429 past them.

These scopes belong to this app, so their rates live in MESSAGING RATE_LIMITS (messaging.conf), and the core's
limiter counts them (realtime.limits.hit with the scope's own rate): the same fixed windows, one INCR + EXPIRE
in Redis (in this process on the embedded default), and the same 429 JSON with Retry-After
(livesite.errors.RateLimited). A Redis that does not answer lets the action through (logged): a limiter must
not take messaging down with it.
"""

import logging

from redis.exceptions import RedisError

from livesite.errors import RateLimited
from messaging import conf
from realtime import limits

logger = logging.getLogger(__name__)


def hit(scope: str, who: str, *, now: float | None = None) -> None:
    """Sync: count one action of `who` in messaging's `scope`; raises limits.Limited past its rate."""
    rate = conf.rate(scope)
    if rate is not None:
        limits.hit(scope, who, now=now, rate=rate)  # its names differ from the core's scopes


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
    limits._memory = limits.MemoryCounters()
