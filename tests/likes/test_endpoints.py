"""The async like endpoint (likes.endpoints.like): the DRF view's contract, with likes written in async batches."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import OperationalError
from django.test import Client
from rest_framework.authtoken.models import Token

from likes import endpoints, services
from likes.models import Like, LiveVideo
from realtime import limits
from tests.likes.conftest import WINDOW_SECS
from tests.likes.factories import make_member, make_video

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "k" * 32  # what a page would hold from Django's CSRF cookie


async def router(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The proposed ASGI routing (livesite/asgi.py): the like path to the endpoint; anything else is a test bug."""
    app = endpoints.route(scope["path"])
    assert app is not None, scope["path"]
    await app(scope, receive, send)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=router)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


@sync_to_async
def _member_with_token(name: str) -> tuple[User, str]:
    member = make_member(name)
    return member, Token.objects.create(user=member).key


@sync_to_async
def _video(slug: str = "keynote", *, ended: bool = False) -> LiveVideo:
    return make_video(User.objects.get_or_create(username="owner")[0], slug, ended=ended)


@sync_to_async
def _stored(video: LiveVideo) -> tuple[int, int]:
    return LiveVideo.objects.get(pk=video.pk).like_count, Like.objects.filter(video=video).count()


@sync_to_async
def _session_cookie(member: User) -> str:
    browser = Client()
    browser.force_login(member)
    return browser.cookies["sessionid"].value


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def test_a_like_answers_201_with_the_exact_total_and_is_announced_after_commit(
    client: httpx.AsyncClient, published: Any, scheduler: Any
) -> None:
    member, key = await _member_with_token("alice")
    video = await _video()
    headers = {"Authorization": f"Token {key}"}
    first = await client.post(f"/api/videos/{video.pk}/likes", headers=headers)
    assert first.status_code == 201, first.text
    assert first.json() == {"count": 1}
    second = await client.post(f"/api/videos/{video.pk}/likes", json={"ignored": True}, headers=headers)
    assert second.json() == {"count": 2}
    assert await _stored(video) == (2, 2)
    await sync_to_async(scheduler.advance)(WINDOW_SECS)
    [event] = published.of_type("like.created")
    assert (event.topic, event.data["count"], event.data["covered"]) == (f"video.{video.pk}.likes", 2, 2)
    assert event.data["by"] == [{"id": member.pk, "name": "alice"}]


async def test_likes_arriving_during_a_write_share_the_next_batch_and_each_gets_its_total(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    video = await _video("hot")
    keys = [(await _member_with_token(f"fan{n}"))[1] for n in range(12)]
    entered, release = asyncio.Event(), asyncio.Event()
    awrite = services._alikes.awrite

    async def held(items: Any) -> Any:
        # The first batch is held open until every other like waits behind it: they must share one batch.
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await awrite(items)

    monkeypatch.setattr(services._alikes, "awrite", held)
    asubmit, arrived, all_queued = services._alikes.asubmit, [0], asyncio.Event()

    async def counted(item: Any) -> Any:
        # Requests reach the queue after their token lookup, which runs in a thread: wait for that, not for time.
        arrived[0] += 1
        if arrived[0] == len(keys):
            all_queued.set()
        return await asubmit(item)

    monkeypatch.setattr(services._alikes, "asubmit", counted)
    before = dict(services._alikes.stats)

    def like(key: str) -> "asyncio.Task[httpx.Response]":
        headers = {"Authorization": f"Token {key}"}
        return asyncio.ensure_future(client.post(f"/api/videos/{video.pk}/likes", headers=headers))

    tasks = [like(keys[0])]
    await entered.wait()
    tasks += [like(key) for key in keys[1:]]
    await all_queued.wait()
    assert services._alikes.queued() == len(keys) - 1
    release.set()
    answers = await asyncio.gather(*tasks)
    assert sorted(answer.json()["count"] for answer in answers) == list(range(1, len(keys) + 1))
    assert services._alikes.stats["async_batches"] - before["async_batches"] == 2
    assert services._alikes.stats["async_largest_batch"] >= len(keys) - 1
    assert await _stored(video) == (len(keys), len(keys))


async def test_an_ended_video_refuses_likes_with_409(client: httpx.AsyncClient) -> None:
    _member, key = await _member_with_token("alice")
    video = await _video("yesterday", ended=True)
    response = await client.post(f"/api/videos/{video.pk}/likes", headers={"Authorization": f"Token {key}"})
    assert_error(response, 409, "video_ended")
    assert await _stored(video) == (0, 0)


# "\u0661" is an Arabic-Indic digit one: str.isdigit() and int() take it.
@pytest.mark.parametrize(
    "raw_id", ["999999", "abc", "-1", "1.5", "0x1", "99999999999999999999999", "\u0661", "%00", "1%20"]
)
async def test_an_id_that_names_no_video_is_a_json_404(client: httpx.AsyncClient, raw_id: str) -> None:
    _member, key = await _member_with_token("alice")
    response = await client.post(f"/api/videos/{raw_id}/likes", headers={"Authorization": f"Token {key}"})
    assert_error(response, 404, "video_not_found")


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "not_authenticated"),
        ({"Authorization": "Token not-a-real-key"}, "authentication_failed"),
    ],
)
async def test_liking_needs_a_signed_in_member(client: httpx.AsyncClient, headers: dict[str, str], code: str) -> None:
    video = await _video()
    assert_error(await client.post(f"/api/videos/{video.pk}/likes", headers=headers), 403, code)
    assert await _stored(video) == (0, 0)


async def test_a_session_like_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    member, _key = await _member_with_token("alice")
    video = await _video()
    client.cookies.update({"sessionid": await _session_cookie(member), "csrftoken": CSRF})
    refused = await client.post(f"/api/videos/{video.pk}/likes")
    assert "CSRF token missing" in assert_error(refused, 403, "permission_denied")["detail"]
    accepted = await client.post(f"/api/videos/{video.pk}/likes", headers={"X-CSRFToken": CSRF})
    assert accepted.status_code == 201, accepted.text


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT"])
async def test_a_wrong_method_is_a_json_405(client: httpx.AsyncClient, method: str) -> None:
    _member, key = await _member_with_token("alice")
    video = await _video()
    response = await client.request(method, f"/api/videos/{video.pk}/likes", headers={"Authorization": f"Token {key}"})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_member_past_the_like_rate_gets_429_with_retry_after_and_others_still_like(
    client: httpx.AsyncClient, settings: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str, store: str
) -> None:
    # A fixed clock: a window that ended mid-test would reset the count and the test would pass for nothing.
    monkeypatch.setattr(limits, "clock", lambda: 1_000_000.5)
    settings.REDIS_URL = redis_url if store == "redis" else ""
    settings.REDIS_KEY_PREFIX = f"likes-limit-{store}"
    settings.REALTIME = {**settings.REALTIME, "RATE_LIMITS": {**settings.REALTIME["RATE_LIMITS"], "like": "3/s"}}
    _alice, alice_key = await _member_with_token("alice")
    _bob, bob_key = await _member_with_token("bob")
    video = await _video()
    url = f"/api/videos/{video.pk}/likes"
    for count in (1, 2, 3):
        assert (await client.post(url, headers={"Authorization": f"Token {alice_key}"})).json() == {"count": count}
    refused = await client.post(url, headers={"Authorization": f"Token {alice_key}"})
    assert "like: at most 3 per 1 s" in assert_error(refused, 429, "rate_limited")["detail"]
    assert refused.headers["retry-after"] == "1"
    if store == "redis":
        # Another worker counts in the same Redis window: its own memory knows nothing of alice's likes.
        monkeypatch.setattr(limits, "_memory", limits.MemoryCounters())
        again = await client.post(url, headers={"Authorization": f"Token {alice_key}"})
        assert_error(again, 429, "rate_limited")
    assert (await client.post(url, headers={"Authorization": f"Token {bob_key}"})).json() == {"count": 4}
    assert await _stored(video) == (4, 4)


async def test_a_database_that_does_not_answer_is_a_503_with_retry_after_and_the_next_batch_goes_on(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _member, key = await _member_with_token("alice")
    video = await _video()
    awrite = services._alikes.awrite
    failures = [OperationalError("database is locked")]

    async def flaky(items: Any) -> Any:
        if failures:
            raise failures.pop()
        return await awrite(items)

    monkeypatch.setattr(services._alikes, "awrite", flaky)
    headers = {"Authorization": f"Token {key}"}
    refused = await client.post(f"/api/videos/{video.pk}/likes", headers=headers)
    assert_error(refused, 503, "database_unavailable")
    assert refused.headers["retry-after"] == "5"
    assert (await client.post(f"/api/videos/{video.pk}/likes", headers=headers)).json() == {"count": 1}
