"""The viewer count: streams subscribed to a video's likes, summed over workers and announced on change."""

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
