"""One Prometheus scrape of any worker shows every worker of the cluster; cluster stats agree."""

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.system.harness import SSEClient, eventually, stats, streams, subscribe

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


async def _connections(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{url}/metrics")
    response.raise_for_status()
    return {
        sample.labels["worker"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "livesite_connections"
    }


async def test_one_scrape_shows_both_workers_streams(redis_server, start_worker, tokens):
    a = start_worker(redis_server.url, name="a")
    b = start_worker(redis_server.url, name="b")
    async with streams(SSEClient(a.url, topics=["news.m"]), SSEClient(b.url), SSEClient(b.url)):
        worker_a = (await stats(a.url, tokens["admin"]))["worker"]
        worker_b = (await stats(b.url, tokens["admin"]))["worker"]

        async def both_seen() -> bool:
            seen = await _connections(a.url)
            return seen.get(worker_a) == 1 and seen.get(worker_b) == 2

        # Each worker files its figures every 5 s: the scrape of A shows B's streams within that.
        await eventually(both_seen, timeout=15)
        async with httpx.AsyncClient(timeout=10) as client:
            cluster = (
                await client.get(
                    f"{b.url}/realtime/stats",
                    params={"scope": "cluster"},
                    headers={"Authorization": f"Token {tokens['admin']}"},
                )
            ).json()
        assert {worker["worker"] for worker in cluster["workers"]} == {worker_a, worker_b}
        assert cluster["totals"]["connections"] == 3
        assert cluster["busiest_topics"][0]["topic"] == "news.m"


async def test_the_admin_routing_view_asks_the_worker_that_hosts_a_topic(redis_server, start_worker, tokens):
    a = start_worker(redis_server.url, name="a")
    b = start_worker(redis_server.url, name="b")
    async with streams(SSEClient(b.url, topics=["news.far"]), SSEClient(b.url, topics=["news.far"])):
        worker_b = (await stats(b.url, tokens["admin"]))["worker"]
        async with httpx.AsyncClient(base_url=a.url, timeout=10) as admin:
            await admin.get("/admin/login/")
            signed_in = await admin.post(
                "/admin/login/",
                data={"username": "admin", "password": "pw-admin", "csrfmiddlewaretoken": admin.cookies["csrftoken"]},
            )
            assert signed_in.status_code == 302, signed_in.text
            page = (await admin.get("/admin/realtime/routing/", params={"topic": "news.far"})).text
        # Answered by worker A, about streams only worker B holds: B counted them itself.
        assert f"<tr><td><code>{worker_b}</code></td><td>2</td></tr>" in page


async def test_json_logs_carry_the_proxys_request_id_to_the_worker_that_holds_the_stream(redis_server, start_worker):
    logs = {"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}
    a = start_worker(redis_server.url, name="a", **logs)
    b = start_worker(redis_server.url, name="b", **logs)
    async with streams(SSEClient(a.url)) as (reader,):
        response = await subscribe(b.url, reader.connection_id, ["news.traced"], headers={"X-Request-ID": "req-7f3a"})
        assert response.status_code == 200, response.text

        def traced() -> list[dict]:
            lines = [json.loads(line) for line in a.logs().splitlines() if line.startswith("{")]
            return [line for line in lines if line["request_id"] == "req-7f3a"]

        async def logged() -> bool:
            return bool(traced())

        # Worker A served the subscription B forwarded to it: its line carries the id B was given.
        await eventually(logged, timeout=5)
        line = traced()[0]
        assert line["logger"] == "realtime.worker"
        assert "news.traced" in line["message"]
        assert set(line) >= {"time", "level", "logger", "message", "request_id", "pid"}
