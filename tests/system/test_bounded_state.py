"""Anonymous clients cannot make Redis hold more than the workers themselves need: streams that come and go
leave nothing behind once the TTLs that bound them have run out, and subscription requests that name made-up
workers are refused at once without leaving anything at all. Real Daphne workers, a private redis-server."""

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import httpx
import pytest
import redis.asyncio as aioredis

from tests.system.harness import SSEClient, eventually

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

STREAMS = 1_000
BATCH = 100  # streams opened (and closed) at once
CENSUS_SECS = 0.5
# A census key lives three intervals after its last report (realtime.census); census announcements have no
# history (they are state, announced again each interval), and the history TTLs are shortened here anyway so a
# history key, were one ever written by these streams, would run out within the test.
BOUNDED = {
    "REALTIME_CENSUS_SECS": str(CENSUS_SECS),
    "REALTIME_HISTORY_SECS": "1",
    "REALTIME_HISTORY_META_SECS": "2",
}
SETTLE_SECS = 15.0  # > 3 census intervals + the history TTLs, with room for a loaded 2-core machine
# What idle workers keep, whatever the streams did: per worker its liveness beat and its metrics entry, and
# cluster-wide the control group, the worker list and claims that come and go (presence's reconcile): 7 for
# two workers today. Per-stream state would be thousands.
IDLE_KEYS_BOUND = 10


async def redis_keys(url: str) -> set[str]:
    """Every live key (KEYS skips keys whose TTL ran out but which Redis has not reclaimed yet; DBSIZE doesn't)."""
    client = aioredis.from_url(url)
    try:
        return {key.decode() for key in await client.keys("*")}
    finally:
        await client.aclose()


async def idle_keys(url: str, workers: list) -> set[str]:
    """The keys of workers that hold no stream: each worker is started (on its first stream) and idle again."""
    for worker in workers:
        async with SSEClient(worker.url):
            pass
    return await redis_keys(url)


class Stream:
    """An anonymous stream, open once its hello says it is registered for all its topics."""

    def __init__(self, client: httpx.AsyncClient, base_url: str, topics: list[str]) -> None:
        self.request = client.build_request("GET", f"{base_url}/realtime/connect", params={"topics": ",".join(topics)})
        self.client = client
        self.response: httpx.Response | None = None
        self.lines: AsyncIterator[str] | None = None

    async def open(self) -> "Stream":
        self.response = await self.client.send(self.request, stream=True)
        if self.response.status_code != 200:
            await self.response.aread()
            raise AssertionError(f"stream refused: {self.response.status_code} {self.response.text}")
        # Held, not dropped: the line iterator's finaliser would close the stream.
        self.lines = self.response.aiter_lines()
        async for line in self.lines:
            if line == "event: connected":
                return self
        raise AssertionError("the stream ended before its hello")

    async def close(self) -> None:
        if self.response is not None:
            await self.response.aclose()


@pytest.mark.timeout(150)  # 14 s on a quiet machine; over 60 s with a load average of 14 (CI beside benchmarks)
async def test_redis_keys_return_to_idle_after_1000_anonymous_streams_come_and_go(redis_server, start_worker):
    workers = [start_worker(redis_server.url, name=name, **BOUNDED) for name in ("a", "b")]
    idle = await idle_keys(redis_server.url, workers)
    assert len(idle) <= IDLE_KEYS_BOUND, sorted(idle)

    # Each stream names a made-up video (counted by the census) and a made-up topic of an open namespace.
    # One client for all (an httpx client per stream costs 20 ms to build); a connection per stream.
    streams: list[Stream] = []
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None), limits=limits) as client:
        try:
            for start in range(0, STREAMS, BATCH):
                batch = [
                    Stream(client, workers[n % 2].url, [f"video.{n}.likes", f"news.bounded-{n}"]).open()
                    for n in range(start, start + BATCH)
                ]
                streams += await asyncio.wait_for(asyncio.gather(*batch), 20)

            async def all_counted() -> bool:
                keys = await redis_keys(redis_server.url)
                return sum(":census:video." in key for key in keys) == STREAMS

            # The census holds a key for every one of them: the state whose disappearance is checked below.
            await eventually(all_counted, timeout=10)
            assert len(await redis_keys(redis_server.url)) >= 4 * STREAMS  # both topics' groups, census, last
        finally:
            for start in range(0, len(streams), BATCH):
                await asyncio.wait_for(asyncio.gather(*(s.close() for s in streams[start : start + BATCH])), 20)

    async def back_to_idle() -> set[str] | None:
        keys = await redis_keys(redis_server.url)
        return None if len(keys) > IDLE_KEYS_BOUND or _from_streams(keys) else keys

    try:
        await eventually(back_to_idle, timeout=SETTLE_SECS, interval=0.25)
    except AssertionError:
        keys = await redis_keys(redis_server.url)
        left = sorted(_from_streams(keys) or keys - idle)
        raise AssertionError(f"{len(keys)} keys {SETTLE_SECS}s after the streams closed, e.g. {left[:5]}") from None


def _from_streams(keys: set[str]) -> list[str]:
    return [key for key in keys if "video." in key or "news.bounded-" in key]


async def test_streams_naming_made_up_videos_leave_no_key_beyond_the_census_ttl(redis_server, start_worker):
    worker = start_worker(redis_server.url, REALTIME_CENSUS_SECS=str(CENSUS_SECS))  # the history's defaults
    await idle_keys(redis_server.url, [worker])
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        streams = [Stream(client, worker.url, [f"video.{900_000 + n}.likes"]) for n in range(20)]
        await asyncio.gather(*(stream.open() for stream in streams))

        async def all_counted() -> bool:
            return sum(":census:video." in key for key in await redis_keys(redis_server.url)) == len(streams)

        await eventually(all_counted, timeout=10)
        await asyncio.gather(*(stream.close() for stream in streams))

    async def none_left() -> bool:
        return not _from_streams(await redis_keys(redis_server.url))

    # Three census intervals after the last report, and a margin: what the census promises for its own keys.
    try:
        await eventually(none_left, timeout=3 * CENSUS_SECS + 3)
    except AssertionError:
        client = aioredis.from_url(redis_server.url)
        left = {key: await client.ttl(key) for key in sorted(_from_streams(await redis_keys(redis_server.url)))}
        await client.aclose()
        raise AssertionError(f"{len(left)} keys left, with their TTLs: {dict(list(left.items())[:4])}") from None


def made_up_connection_ids(count: int) -> tuple[list[str], list[str]]:
    """Connection ids naming workers that do not exist, mostly well-formed worker channels, some malformed; and
    the random names in them (a key holding one would be a trace of these requests)."""
    names: list[str] = []

    def name(nbytes: int) -> str:
        names.append(secrets.token_hex(nbytes))
        return names[-1]

    token = secrets.token_urlsafe(18)
    shapes = [
        lambda: f"{token}~realtime.worker.{name(16)}!{name(16)}",
        lambda: f"{token}~realtime.worker.{name(16)}!",
        lambda: f"{token}~specific.{name(8)}!{name(8)}",
        lambda: f"{token}~",
        lambda: secrets.token_urlsafe(24),
    ]
    return [shapes[0]() if n % 4 else shapes[1 + (n // 4) % 4]() for n in range(count)], names


async def test_subscriptions_naming_made_up_workers_are_refused_at_once_and_leave_no_key(redis_server, start_worker):
    worker = start_worker(redis_server.url)
    idle = await idle_keys(redis_server.url, [worker])
    ids, names = made_up_connection_ids(200)
    slowest = 0.0
    async with httpx.AsyncClient(base_url=worker.url, timeout=10) as client:

        async def ask(n: int, connection_id: str) -> None:
            nonlocal slowest
            started = time.monotonic()
            response = await client.request(
                "POST" if n % 2 else "DELETE",
                "/realtime/subscriptions",
                json={"connection_id": connection_id, "topics": [f"news.made-up-{n}", f"video.{n}.likes"]},
            )
            slowest = max(slowest, time.monotonic() - started)
            assert response.status_code == 404, (connection_id, response.text)
            assert response.json()["code"] == "unknown_connection"

        for start in range(0, len(ids), 20):
            await asyncio.gather(*(ask(n, ids[n]) for n in range(start, min(start + 20, len(ids)))))

    # "At once": none waited for an answer from the worker it names (REALTIME_RPC_TIMEOUT_SECS, 3 s).
    assert slowest < 1.0, f"the slowest refusal took {slowest:.2f}s"
    keys = await redis_keys(redis_server.url)
    traces = [key for key in keys if "made-up-" in key or "video." in key or any(name in key for name in names)]
    assert not traces, traces[:5]
    assert len(keys) <= IDLE_KEYS_BOUND, sorted(keys - idle)
