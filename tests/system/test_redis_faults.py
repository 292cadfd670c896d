"""Redis restarted empty under steady traffic: clear answers while it is gone, every stream receiving again
within 2 s of its return, and no subscription left answering 200 while receiving nothing."""

import asyncio
import time

import httpx
import pytest

from tests.system.harness import SSEClient, publish, streams, subscribe

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]


async def _publisher(url: str, token: str, topic: str, statuses: list[int], stop: asyncio.Event) -> None:
    """One publish every 50 ms until stopped (bounded: at most 600)."""
    async with httpx.AsyncClient(timeout=5) as http:
        for n in range(600):
            if stop.is_set():
                return
            response = await http.post(
                f"{url}/api/publish",
                json={"topic": topic, "type": "tick", "data": {"n": n, "at": time.time()}},
                headers={"Authorization": f"Token {token}"},
            )
            statuses.append(response.status_code)
            await asyncio.sleep(0.05)


async def test_redis_restarted_empty_under_traffic(redis_server, start_worker, tokens):
    # A long lease: the repair, not the next lease refresh (20 s), must bring the registrations back.
    a = start_worker(redis_server.url, name="a", REALTIME_LEASE_SECS="60")
    b = start_worker(redis_server.url, name="b", REALTIME_LEASE_SECS="60")
    async with streams(SSEClient(a.url, topics=["fault.ticks"]), SSEClient(b.url)) as (reader, other):
        statuses: list[int] = []
        stop = asyncio.Event()
        sender = asyncio.create_task(_publisher(b.url, tokens["admin"], "fault.ticks", statuses, stop))
        try:
            await reader.next_event("tick", timeout=10)

            redis_server.stop()
            # While Redis is gone: clear answers, never a 500 or a hang.
            response = await subscribe(b.url, reader.connection_id, ["fault.other"])
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "realtime_unavailable"
            assert response.headers["retry-after"] == "1"
            response = await subscribe(b.url, other.connection_id, ["fault.local"])
            assert response.status_code == 503, response.text
            response = await publish(b.url, tokens["admin"], "fault.ticks", "tick", {"n": -1, "at": time.time()})
            assert response.status_code == 503, response.text
            # A stream that cannot register its topics says so in a last frame and ends; it never hangs.
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.get(f"{a.url}/realtime/connect", params={"topics": "fault.new"})
            assert response.status_code == 200  # sent before the registration could fail
            assert "event: error" in response.text
            assert '"code": "registration_failed"' in response.text

            redis_server.start()  # same port, empty: every group and message is gone
            returned_at = time.time()
            # Every stream receives again within 2 s of Redis returning, with no help from the client, and is
            # told first that the events accepted before Redis lost them are gone (a gap, never a silence).
            gaps = []
            while True:
                frame = await reader.next_frame(timeout=10)
                if frame.event == "gap":
                    gaps.append(frame.json())
                elif frame.event == "tick" and frame.json()["data"]["at"] >= returned_at:
                    break
            assert time.time() - returned_at < 2.0, "the stream did not receive again within 2 s"
            assert gaps == [{"topics": ["fault.ticks"]}]
        finally:
            stop.set()
            await sender
        assert set(statuses) <= {202, 503}, statuses
        # Everything works again: a new subscription on the other worker's stream, and its events.
        response = await subscribe(a.url, other.connection_id, ["fault.after"])
        assert response.status_code == 200, response.text
        response = await publish(a.url, tokens["admin"], "fault.after", "tick", {"n": 0, "at": 0})
        assert response.status_code == 202
        assert (await other.next_event("tick", timeout=5)).json()["topic"] == "fault.after"


async def test_readyz_follows_redis_within_a_second(redis_server, start_worker):
    worker = start_worker(redis_server.url)
    async with httpx.AsyncClient(timeout=5) as http:

        async def ready() -> int:
            return (await http.get(f"{worker.url}/readyz")).status_code

        assert await ready() == 200
        redis_server.stop()
        stopped_at = time.monotonic()
        response = await http.get(f"{worker.url}/readyz")
        assert response.status_code == 503
        assert response.json()["checks"]["redis"] != "ok"
        assert response.json()["checks"]["database"] == "ok"
        assert time.monotonic() - stopped_at < 1.0
        assert (await http.get(f"{worker.url}/healthz")).status_code == 200  # alive, just not ready
        redis_server.start()
        started_at = time.monotonic()
        while await ready() != 200:
            assert time.monotonic() - started_at < 5, "readyz did not recover within 5 s of Redis returning"
            await asyncio.sleep(0.1)
