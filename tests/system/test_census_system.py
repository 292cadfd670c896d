"""The viewer count and the watchers: streams subscribed to a video's likes, summed over workers (signed-in
members listed) and announced on change."""

import httpx
import pytest

from tests.system.harness import SSEClient, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


async def test_viewer_count_follows_streams_on_two_workers(redis_server, start_worker):
    a = start_worker(redis_server.url, name="a", REALTIME_CENSUS_SECS="0.2")
    b = start_worker(redis_server.url, name="b", REALTIME_CENSUS_SECS="0.2")
    watcher = SSEClient(a.url, topics=["census.video.9.likes"])
    viewer_a = SSEClient(a.url, topics=["video.9.likes"])
    viewer_b = SSEClient(b.url, topics=["video.9.likes"])
    async with streams(watcher, viewer_a, viewer_b):

        async def until_count(expected):
            while True:
                frame = await watcher.next_event("census.changed", timeout=5)
                assert frame.json()["data"]["topic"] == "video.9.likes"
                if frame.json()["data"]["count"] == expected:
                    return

        await until_count(2)
        await viewer_b.close()
        await until_count(1)
        await watcher.assert_no_frame(within=0.7)


async def test_signed_in_watchers_on_two_workers_are_listed_and_anonymous_ones_only_counted(
    redis_server, start_worker, tokens, member_ids
):
    a = start_worker(redis_server.url, name="a", REALTIME_CENSUS_SECS="0.2")
    b = start_worker(redis_server.url, name="b", REALTIME_CENSUS_SECS="0.2")
    topic = "video.10.likes"
    # Who is watching is for signed-in members: the watcher is bob's second device.
    watcher = SSEClient(a.url, topics=[f"census.members.{topic}"], headers={"Authorization": f"Token {tokens['bob']}"})
    alice = SSEClient(a.url, topics=[topic], headers={"Authorization": f"Token {tokens['alice']}"})
    bob = SSEClient(b.url, topics=[topic], headers={"Authorization": f"Token {tokens['bob']}"})
    anonymous = SSEClient(b.url, topics=[topic])
    public = SSEClient(b.url, topics=[f"census.{topic}"])
    async with streams(watcher, public, alice, bob, anonymous):

        async def until(count, members):
            while True:
                data = (await watcher.next_event("census.changed", timeout=5)).json()["data"]
                assert data["topic"] == topic
                if (data["count"], data["members"]) == (count, members):
                    return

        await until(3, sorted([member_ids["alice"], member_ids["bob"]]))
        # The public census says how many, never who.
        data = (await public.next_event("census.changed", timeout=5)).json()["data"]
        assert set(data) == {"topic", "count"}
        # bob leaves worker b: the list loses him although b still reports (its anonymous stream).
        await bob.close()
        await until(2, [member_ids["alice"]])
        await watcher.assert_no_frame(within=0.7)


async def test_who_is_watching_is_for_signed_in_members(start_worker):
    worker = start_worker(name="anonymous-census")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{worker.url}/realtime/connect", params={"topics": "census.members.video.1.likes"})
    assert response.status_code == 403, response.text
