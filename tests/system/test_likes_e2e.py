"""Likes and comments end to end: POSTed through the API of a real Daphne worker, read from a real SSE stream."""

import asyncio
import json
import time

import httpx
import pytest

from tests.system.harness import SSEClient, base_env, run_django, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

WINDOW_MS = 100
BURST = 20

MODES = ["embedded", "redis"]
VIDEOS_SCRIPT = """
import json, uuid
from django.contrib.auth.models import User
from likes.models import LiveVideo
admin = User.objects.get(username="admin")
print(json.dumps([
    LiveVideo.objects.create(title="E2E", slug="e2e-" + uuid.uuid4().hex[:12], owner=admin).pk for _ in range(%d)
]))
"""


@pytest.fixture(scope="module")
def video_ids(site: dict) -> dict[str, int]:
    """A fresh live video per mode, made in one process start (each costs a second or two)."""
    return dict(zip(MODES, json.loads(run_django(base_env(site["tmp"]), VIDEOS_SCRIPT % len(MODES))), strict=True))


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def worker(mode: str, request: pytest.FixtureRequest, start_worker):
    # embedded: one process, in-memory channel layer and coalescing; redis: what a cluster runs.
    redis_url = request.getfixturevalue("redis_server").url if mode == "redis" else ""
    return start_worker(redis_url, name=f"likes-{mode}", LIKES_COALESCE_MS=str(WINDOW_MS))


@pytest.fixture
def video_id(mode: str, video_ids: dict[str, int]) -> int:
    return video_ids[mode]


async def test_a_like_and_a_comment_posted_through_the_api_reach_the_stream(worker, video_id, tokens, member_ids):
    likes, comments = f"video.{video_id}.likes", f"video.{video_id}.comments"
    headers = {"Authorization": f"Token {tokens['alice']}"}
    async with (
        streams(SSEClient(worker.url, topics=[likes, comments])) as (viewer,),
        httpx.AsyncClient(base_url=worker.url, headers=headers, timeout=10) as api,
    ):
        response = await api.post(f"/api/videos/{video_id}/likes")
        assert response.status_code == 201, response.text
        assert response.json() == {"count": 1}
        frame = await viewer.next_event("like.created")
        assert frame.json()["topic"] == likes
        assert frame.json()["data"] == {
            "video": video_id,
            "count": 1,
            "covered": 1,
            "by": [{"id": member_ids["alice"], "name": "alice"}],
        }

        response = await api.post(f"/api/videos/{video_id}/comments", json={"text": "Hello from the stream test"})
        assert response.status_code == 201, response.text
        frame = await viewer.next_event("comment.created")
        assert frame.json()["topic"] == comments
        assert frame.json()["data"] == response.json()

        # A burst: the stream sees fewer like events than likes, with exact totals.
        started = time.monotonic()
        answers = await asyncio.gather(*(api.post(f"/api/videos/{video_id}/likes") for _ in range(BURST)))
        assert sorted(answer.json()["count"] for answer in answers) == list(range(2, BURST + 2))
        events = []
        while not events or events[-1]["count"] < BURST + 1:
            events.append((await viewer.next_event("like.created")).json()["data"])
        elapsed = time.monotonic() - started
        assert sum(event["covered"] for event in events) == BURST
        assert [event["count"] for event in events] == sorted({event["count"] for event in events})
        # Each window opens after the previous flush, so N events take at least N windows.
        assert len(events) <= elapsed / (WINDOW_MS / 1000)
