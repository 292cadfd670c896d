"""The async half of typing indicators: each worker's sweeper announces the marks that expired.

Registered as a periodic job of every worker (realtime.hooks, from MessagingConfig.ready). The store hands
each expired mark to exactly one sweeper (messaging.indicators), so each stop is announced once, by whichever
worker took it, even when the worker that announced the start has died.
"""

import logging
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from messaging import events, indicators, topics
from realtime.publishing import apublish

if TYPE_CHECKING:
    from realtime.worker import Worker

logger = logging.getLogger(__name__)

# Marks taken per store call: bounds how long one sweep holds Redis.
SWEEP_BATCH = 500

stats = {"typing_expired": 0, "typing_sweep_failures": 0}
"""Counters of this process (`/realtime/stats`, `/metrics` as messaging_<name>)."""


async def asweep_typing(now: float | None = None) -> int:
    """Async: take every typing mark that expired by `now` and announce its stop; returns how many."""
    now = time.time() if now is None else now
    store = indicators.get_store()
    announced = 0
    while True:
        expired = await store.atake_expired(now, SWEEP_BATCH)
        for conversation_id, member_id in expired:
            data = events.typing_stopped(conversation_id, member_id, events.EXPIRED)
            await apublish(topics.typing(conversation_id), events.TYPING, data)
        announced += len(expired)
        if len(expired) < SWEEP_BATCH:
            stats["typing_expired"] += announced
            return announced


async def asweep_job(worker: "Worker") -> None:
    """The worker's periodic job: one sweep; a failure is logged and the next interval tries again."""
    try:
        await asweep_typing()
    except (RedisError, OSError) as exc:
        stats["typing_sweep_failures"] += 1
        logger.warning("typing sweep failed (%s); retrying at the next interval", exc)
