"""A rate limit holds across workers: the counter lives in Redis, not in one process."""

import pytest

from tests.system.harness import publish

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
