"""A rate limit holds across workers: the counter lives in Redis, not in one process."""

import pytest

from tests.system.harness import SSEClient, eventually, publish, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

# Per hour: a window boundary falling inside this second-long test is a one-in-thousands chance.
LIMITS = "connect=0,subscribe=0,publish=3/h,like=0,comment=0,sign_in=0"


async def test_a_members_publishes_are_counted_across_workers(redis_server, start_worker, tokens):
    a = start_worker(redis_server.url, name="a", REALTIME_RATE_LIMITS=LIMITS)
    b = start_worker(redis_server.url, name="b", REALTIME_RATE_LIMITS=LIMITS)
    statuses = [
        (await publish(worker.url, tokens["admin"], "news.flash", "news.posted", {"n": n})).status_code
        for n, worker in enumerate([a, a, b])
    ]
    assert statuses == [202, 202, 202]
    refused = await publish(b.url, tokens["admin"], "news.flash", "news.posted", {"n": 3})
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1
    # Another member is counted apart.
    assert (await publish(a.url, tokens["alice"], "news.flash", "news.posted", {})).status_code != 429


async def test_streams_open_at_once_are_capped_across_workers_and_a_dead_workers_places_come_back(
    redis_server, start_worker
):
    caps = {"REALTIME_MAX_STREAMS_PER_ADDRESS": "3"}
    a = start_worker(redis_server.url, name="a", **caps)
    b = start_worker(redis_server.url, name="b", **caps)
    async with streams(SSEClient(a.url), SSEClient(a.url), SSEClient(b.url)):
        with pytest.raises(AssertionError, match="429") as refused:
            await SSEClient(b.url).connect()
        assert "too_many_streams" in str(refused.value)
    # Closed streams give their places back (on whichever worker held them).
    c = SSEClient(b.url)
    await eventually(lambda: _opens(c), timeout=5)
    await c.close()
    # A worker SIGKILLed with streams open cannot give them back: its places return once it stops beating.
    held = [SSEClient(a.url), SSEClient(a.url), SSEClient(a.url)]
    for client in held:
        await client.connect()
    a.kill()
    for client in held:
        await client.close()
    late = SSEClient(b.url)
    await eventually(lambda: _opens(late), timeout=15)
    await late.close()


async def test_with_redis_gone_a_counted_door_answers_503_not_500(redis_server, start_worker, tokens):
    worker = start_worker(redis_server.url, REALTIME_RATE_LIMITS=LIMITS, REALTIME_MAX_STREAMS_PER_ADDRESS="10")
    redis_server.stop()
    response = await publish(worker.url, tokens["admin"], "news.flash", "news.posted", {})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "realtime_unavailable"
    with pytest.raises(AssertionError, match="503"):
        await SSEClient(worker.url).connect()
    redis_server.start()
    # Everything works again.
    assert (await publish(worker.url, tokens["admin"], "news.flash", "news.posted", {})).status_code == 202
    async with streams(SSEClient(worker.url)):
        pass


async def _opens(client: SSEClient) -> bool:
    try:
        await client.connect()
    except AssertionError:
        return False
    return True
