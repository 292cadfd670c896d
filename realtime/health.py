"""GET /healthz and /readyz: what a load balancer and an operator ask a worker, unauthenticated and cheap.

/healthz: the process answers and its event loop turns (the time one loop turn took). /readyz: the worker can
do its job: the database and Redis answer within CHECK_TIMEOUT_SECS, and its realtime worker is started,
receiving, and registered for its topics. Any failed part makes it 503 with each part's state, so the
operator reads which part failed.
"""

import asyncio
import time
from collections.abc import Awaitable

from channels.db import database_sync_to_async
from django.db import connection

from livesite import redisconf
from realtime import stores
from realtime.http import Receive, Request, Send, asend_json, check_method, endpoint
from realtime.worker import aget_worker

CHECK_TIMEOUT_SECS = 0.5


async def _healthz(request: Request, receive: Receive, send: Send) -> None:
    """The process answers and its event loop turns."""
    check_method(request, ("GET", "HEAD"))
    started = time.perf_counter()
    await asyncio.sleep(0)
    await asend_json(send, 200, {"status": "ok", "loop_turn_ms": round((time.perf_counter() - started) * 1000, 3)})


async def _readyz(request: Request, receive: Receive, send: Send) -> None:
    """The database, Redis and this worker's realtime side, each with its state; 503 if any is not ok."""
    check_method(request, ("GET", "HEAD"))
    checks = dict(
        zip(
            ("database", "redis", "worker"),
            await asyncio.gather(_check(_adatabase()), _check(_aredis()), _check(_aworker())),
            strict=True,
        )
    )
    ready = all(state == "ok" for state in checks.values())
    await asend_json(send, 200 if ready else 503, {"status": "ready" if ready else "unavailable", "checks": checks})


healthz = endpoint(_healthz, hosts_checked=False)
readyz = endpoint(_readyz, hosts_checked=False)


async def _check(probe: Awaitable[str]) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECS):
            return await probe
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECS:g} s"
    except Exception as exc:  # Reported, not raised: this endpoint exists to say what failed.
        return f"failed: {type(exc).__name__}: {exc}"[:200]


def _select_one() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


_adatabase = database_sync_to_async(_select_one)


async def _aredis() -> str:
    servers = stores.servers()
    if not servers:
        return "ok"  # The embedded default has no Redis.
    # Every shard: a request may need any of them.
    replies = await asyncio.gather(*(stores.aclient(server).ping() for server in servers), return_exceptions=True)
    failed = [
        f"{redisconf.parse(server)[0]}: {type(reply).__name__}"
        for server, reply in zip(servers, replies, strict=True)
        if isinstance(reply, BaseException)
    ]
    return f"failed: {'; '.join(failed)}"[:200] if failed else "ok"


async def _aworker() -> str:
    worker = await aget_worker()
    if worker.stopped:
        return "stopping"
    if not worker.receiving():
        return "not receiving: its channel-layer loop has stopped"
    if worker.registry.out_of_step:
        return "registrations out of step with its streams (being repaired)"
    return "ok"
