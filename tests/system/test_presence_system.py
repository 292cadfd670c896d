"""Presence on real Daphne workers and a real, private Redis, with scaled intervals and real SSE clients.

A watcher stream subscribes to alice's presence topic; alice's streams come and go (or her worker is killed).
Absences are asserted over a bounded window longer than the offline threshold: had the dot flickered, the
offline event would have arrived within it.
"""

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.system.harness import SSEClient, Worker, base_env, run_django, stats

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

HEARTBEAT_SECS = 0.2
# 5 heartbeats rather than the minimum 3: a Daphne worker sharing 2 cores with other test runs may be late by a
# few hundred milliseconds, and a late heartbeat must not read as a drop.
OFFLINE_AFTER_SECS = 1.0
PRESENCE_ENV = {
    "PRESENCE_HEARTBEAT_SECS": str(HEARTBEAT_SECS),
    "PRESENCE_OFFLINE_AFTER_SECS": str(OFFLINE_AFTER_SECS),
}
# Offline comes at most OFFLINE_AFTER_SECS after the last heartbeat plus one sweep (a tenth of it, jittered);
# the last heartbeat is at most HEARTBEAT_SECS before the stream closed. The rest is slack for a loaded machine.
OFFLINE_WITHIN_SECS = OFFLINE_AFTER_SECS + HEARTBEAT_SECS + 1.5
# How long "nothing happened" is watched: past the offline threshold, with room for a late sweep.
QUIET_SECS = OFFLINE_AFTER_SECS + 0.5


@pytest.fixture
def start(redis_server: Any, start_worker: Any) -> Any:
    def start_presence_worker(name: str) -> Worker:
        return start_worker(redis_server.url, name=name, **PRESENCE_ENV)

    return start_presence_worker


def watcher(worker: Worker, member: int, tokens: dict[str, str]) -> SSEClient:
    # Presence is for signed-in members (PRESENCE_PUBLIC off): the watcher is the admin, who never beats here.
    headers = {"Authorization": f"Token {tokens['admin']}"}
    return SSEClient(worker.url, topics=[f"presence.member.{member}"], headers=headers)


def device(worker: Worker, token: str) -> SSEClient:
    return SSEClient(worker.url, headers={"Authorization": f"Token {token}"})


async def presence_event(client: SSEClient, status: str, timeout: float = OFFLINE_WITHIN_SECS) -> dict[str, Any]:
    frame = await client.next_event(timeout=timeout)
    assert frame.event == "presence.changed", frame
    data = frame.json()["data"]
    assert data["status"] == status, data
    return data


async def api_status(worker: Worker, member: int, tokens: dict[str, str]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(
            f"{worker.url}/api/presence",
            params={"members": str(member)},
            headers={"Authorization": f"Token {tokens['admin']}"},
        )
    response.raise_for_status()
    return response.json()["members"][0]


async def test_closing_every_stream_gives_exactly_one_offline_event_within_the_window(start, tokens, member_ids):
    alice = member_ids["alice"]
    worker = start("a")
    async with watcher(worker, alice, tokens) as watch:
        phone = device(worker, tokens["alice"])
        await phone.connect()
        online = await presence_event(watch, "online")
        assert online["member"] == alice
        # A page that subscribed first and loads now sees the same transition, so it can drop the event as seen.
        assert (await api_status(worker, alice, tokens))["changed_at"] == online["changed_at"]

        await phone.close()
        closed_at = time.time()
        offline = await presence_event(watch, "offline")
        elapsed = time.time() - closed_at
        assert offline["member"] == alice
        assert offline["changed_at"] - offline["last_seen"] > OFFLINE_AFTER_SECS
        # The worker beats once more when it sees the stream close, so last_seen is the close itself (as the
        # server saw it, a moment after the client closed), not the previous periodic beat.
        assert closed_at - HEARTBEAT_SECS / 2 <= offline["last_seen"] <= closed_at + HEARTBEAT_SECS
        assert offline["changed_at"] > online["changed_at"]
        assert elapsed < OFFLINE_WITHIN_SECS
        await watch.assert_no_frame(within=QUIET_SECS)
        assert await api_status(worker, alice, tokens) == offline


async def test_a_short_drop_and_reconnect_changes_nothing(start, tokens, member_ids):
    alice = member_ids["alice"]
    worker = start("a")
    async with watcher(worker, alice, tokens) as watch:
        first = device(worker, tokens["alice"])
        await first.connect()
        online = await presence_event(watch, "online")
        await first.close()
        # The train leaves the tunnel: a new stream at once, as EventSource reconnects.
        async with device(worker, tokens["alice"]):
            await watch.assert_no_frame(within=QUIET_SECS)
            assert (await api_status(worker, alice, tokens))["changed_at"] == online["changed_at"]


async def test_two_devices_are_one_member(start, tokens, member_ids):
    alice = member_ids["alice"]
    worker = start("a")
    async with watcher(worker, alice, tokens) as watch:
        phone, laptop = device(worker, tokens["alice"]), device(worker, tokens["alice"])
        await phone.connect()
        await presence_event(watch, "online")
        await laptop.connect()
        await phone.close()
        await watch.assert_no_frame(within=QUIET_SECS)
        await laptop.close()
        await presence_event(watch, "offline")
        await watch.assert_no_frame(within=QUIET_SECS)


async def test_two_workers_racing_publish_exactly_one_event_per_change(start, tokens, member_ids):
    alice = member_ids["alice"]
    a, b = start("a"), start("b")
    async with watcher(a, alice, tokens) as on_a, watcher(b, alice, tokens) as on_b:
        for _ in range(2):
            # Both devices open at once, one on each worker: both beat at once, both workers sweep.
            phone, laptop = device(a, tokens["alice"]), device(b, tokens["alice"])
            await asyncio.gather(phone.connect(), laptop.connect())
            online = await presence_event(on_a, "online")
            assert await presence_event(on_b, "online") == online
            await asyncio.gather(phone.close(), laptop.close())
            offline = await presence_event(on_a, "offline")
            assert await presence_event(on_b, "offline") == offline
            await asyncio.gather(on_a.assert_no_frame(within=QUIET_SECS), on_b.assert_no_frame(within=QUIET_SECS))


async def test_sigkill_of_the_worker_holding_the_only_stream_still_yields_the_offline_event(start, tokens, member_ids):
    alice = member_ids["alice"]
    a, b = start("a"), start("b")
    async with watcher(b, alice, tokens) as watch:
        phone = device(a, tokens["alice"])
        await phone.connect()
        online = await presence_event(watch, "online")
        a.kill()  # no clean-up runs on a: the offline decision must come from b's sweeper
        killed_at = time.time()
        offline = await presence_event(watch, "offline")
        assert time.time() - killed_at < OFFLINE_WITHIN_SECS
        assert offline["changed_at"] > online["changed_at"]
        await watch.assert_no_frame(within=QUIET_SECS)
        await phone.close()


async def test_the_embedded_default_keeps_presence_in_one_process(start_worker, tokens, member_ids):
    alice = member_ids["alice"]
    worker = start_worker(name="embedded", **PRESENCE_ENV)  # no REDIS_URL: in-memory layer and store
    async with watcher(worker, alice, tokens) as watch:
        async with device(worker, tokens["alice"]):
            online = await presence_event(watch, "online")
        offline = await presence_event(watch, "offline")
        assert offline["changed_at"] > online["changed_at"]
        assert await api_status(worker, alice, tokens) == offline


async def test_the_admin_table_follows_when_the_worker_was_started_by_a_django_view(start, tokens, member_ids, site):
    """Regression: a worker started inside a Django request used to inherit that request's (soon dead)
    sync-thread executor, so its sweeper could not write the admin table."""
    alice = member_ids["alice"]
    worker = start("a")
    await stats(worker.url, tokens["admin"])  # the first request, through Django, starts the worker
    async with watcher(worker, alice, tokens) as watch:
        phone = device(worker, tokens["alice"])
        await phone.connect()
        await presence_event(watch, "online")
        await phone.close()
        offline = await presence_event(watch, "offline")
    row = run_django(
        base_env(site["tmp"]),
        f"from presence.models import Presence\nrow = Presence.objects.get(member_id={alice})\n"
        "print(row.online, repr(row.changed_at))",
    ).split()
    assert row == ["False", repr(offline["changed_at"])]
    assert "CurrentThreadExecutor" not in worker.logs()
