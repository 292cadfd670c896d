"""The real-time endpoints through the ASGI entry point: one implementation each, whoever calls.

Token clients and browsers (session + CSRF) reach the same code; every refusal is the one JSON shape.
"""

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Permission, User
from django.middleware.csrf import CsrfViewMiddleware
from rest_framework.authtoken.models import Token

import realtime
from livesite.asgi import application
from realtime import auth
from realtime.events import ReservedType
from realtime.routing import ROUTES

pytestmark = pytest.mark.django_db(transaction=True)

EVENT = {"topic": "news.flash", "type": "news.posted", "data": {"n": 1}}
CSRF = "k" * 32  # what a page would hold from Django's CSRF cookie


@pytest.fixture(autouse=True)
def _news_is_open(settings: Any) -> None:
    # The operator's open namespace these tests publish to (realtime.policies: deny by default).
    settings.REALTIME = {**settings.REALTIME, "OPEN_NAMESPACES": ["news"]}


@pytest.fixture
def publisher() -> User:
    user = User.objects.create_user("svc", password="pw-svc")
    user.user_permissions.add(Permission.objects.get(codename="publish_event"))
    return user


@pytest.fixture
def token(publisher: User) -> str:
    return Token.objects.create(user=publisher).key


def _session_cookie(user: User) -> str:
    from django.test import Client

    browser = Client()
    browser.force_login(user)
    return browser.cookies["sessionid"].value


def test_every_realtime_endpoint_is_routed_by_path_to_one_app() -> None:
    assert set(ROUTES) == {
        "/realtime/connect",
        "/realtime/subscriptions",
        "/realtime/peer/events",
        "/realtime/stats",
        "/realtime/tickets",
        "/metrics",
        "/api/publish",
        "/healthz",
        "/readyz",
    }


async def test_a_token_publish_is_accepted(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post("/api/publish", json=EVENT, headers={"Authorization": f"Token {token}"})
    assert response.status_code == 202, response.text
    assert len(response.json()["ids"]) == 1
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_session_publish_needs_the_csrf_token_and_says_why(client: httpx.AsyncClient, publisher: User) -> None:
    session = await _asession(publisher)
    cookies = {"sessionid": session, "csrftoken": CSRF}
    client.cookies.update(cookies)
    refused = await client.post("/api/publish", json=EVENT)
    assert refused.status_code == 403
    assert refused.json()["code"] == "csrf_failed"
    assert "CSRF token missing" in refused.json()["detail"]  # Django's own reason
    accepted = await client.post("/api/publish", json=EVENT, headers={"X-CSRFToken": CSRF})
    assert accepted.status_code == 202, accepted.text


async def test_a_foreign_origin_is_refused_with_djangos_reason(client: httpx.AsyncClient, publisher: User) -> None:
    client.cookies.update({"sessionid": await _asession(publisher), "csrftoken": CSRF})
    response = await client.post(
        "/api/publish", json=EVENT, headers={"X-CSRFToken": CSRF, "Origin": "http://evil.example"}
    )
    assert response.status_code == 403
    assert "Origin checking failed" in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "not_authenticated"),
        ({"Authorization": "Token wrong"}, 401, "invalid_token"),
        ({"Authorization": "Bearer x"}, 401, "invalid_token"),
    ],
)
async def test_publishing_without_valid_credentials_is_refused(
    client: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
) -> None:
    response = await client.post("/api/publish", json=EVENT, headers=headers)
    assert response.status_code == status
    assert response.json()["code"] == code


async def test_publishing_without_the_permission_is_refused(client: httpx.AsyncClient) -> None:
    key = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_user("nobody")).key)()
    response = await client.post("/api/publish", json=EVENT, headers={"Authorization": f"Token {key}"})
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize(
    ("content", "content_type", "status", "code"),
    [
        (b"{", "application/json", 400, "parse_error"),
        (b'{"topic": NaN}', "application/json", 400, "parse_error"),
        (b'{"topic": "a.b", "type": "t", "data": "\\ud800"}', "application/json", 400, "parse_error"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "parse_error"),
        (b"\xff\xfe", "application/json", 400, "parse_error"),
        (b"topic=a", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b'{"topic": "A B", "type": "t", "data": 1}', "application/json", 400, "invalid"),
        (b'{"events": []}', "application/json", 400, "invalid"),
        (b"x" * 2_700_000, "application/json", 413, "too_large"),
    ],
)
async def test_bad_publish_bodies_are_clear_4xx(
    client: httpx.AsyncClient, token: str, content: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post(
        "/api/publish",
        content=content,
        headers={"Authorization": f"Token {token}", "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


async def test_a_batch_names_the_position_of_each_bad_event(client: httpx.AsyncClient, token: str) -> None:
    body = {"events": [EVENT, {"topic": "Bad", "type": "t", "data": 1}, {"type": "t"}]}
    response = await client.post("/api/publish", json=body, headers={"Authorization": f"Token {token}"})
    assert response.status_code == 400
    errors = response.json()["errors"]["events"]
    assert set(errors) == {"1", "2"}
    assert "topic" in errors["1"]
    assert set(errors["2"]) == {"topic", "data"}


async def test_a_host_outside_allowed_hosts_is_refused_on_every_endpoint(token: str) -> None:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as evil:
        for path in set(ROUTES) - {"/healthz", "/readyz"}:  # probes answer any Host (a load balancer's IP)
            response = await evil.post(path, json=EVENT, headers={"Authorization": f"Token {token}"})
            assert response.status_code == 400, path
            assert response.json()["code"] == "disallowed_host"


async def test_the_wrong_method_is_a_405_with_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/publish")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"


async def test_an_unknown_connection_is_a_404(client: httpx.AsyncClient) -> None:
    body = {"connection_id": "nope", "topics": ["a.b"]}
    response = await client.post("/realtime/subscriptions", json=body)
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_connection"


async def test_too_many_topics_is_one_answer_everywhere(client: httpx.AsyncClient, settings: Any) -> None:
    settings.REALTIME = {**settings.REALTIME, "MAX_TOPICS_PER_CONNECTION": 2}
    body = {"connection_id": "nope", "topics": ["a.a", "a.b", "a.c"]}
    by_post = await client.post("/realtime/subscriptions", json=body)
    by_connect = await client.get("/realtime/connect?topics=a.a,a.b,a.c")
    assert by_post.status_code == by_connect.status_code == 409
    assert by_post.json() == by_connect.json()


async def test_stats_are_for_staff(client: httpx.AsyncClient, token: str) -> None:
    response = await client.get("/realtime/stats", headers={"Authorization": f"Token {token}"})
    assert response.status_code == 403
    key = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_superuser("root")).key)()
    response = await client.get("/realtime/stats", headers={"Authorization": f"Token {key}"})
    assert response.status_code == 200
    assert "connections" in response.json()


def test_the_csrf_check_still_goes_through_the_method_we_override() -> None:
    # realtime.auth reads Django's refusal reason by overriding CsrfViewMiddleware._reject.
    assert callable(CsrfViewMiddleware._reject)
    assert auth._CsrfCheck._reject is not CsrfViewMiddleware._reject


async def _asession(user: User) -> str:
    return await sync_to_async(_session_cookie)(user)


async def test_a_database_that_does_not_answer_is_a_503_on_the_realtime_endpoints(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.db import OperationalError

    from realtime import tokens

    def locked(key: str) -> None:
        raise OperationalError("database is locked")

    monkeypatch.setattr(tokens, "lookup", locked)
    monkeypatch.setattr(auth, "_alookup_token", sync_to_async(locked))
    response = await client.post("/api/publish", json=EVENT, headers={"Authorization": "Token not-cached"})
    assert response.status_code == 503
    assert response.json()["code"] == "database_unavailable"
    assert response.headers["retry-after"] == "5"


@pytest.mark.parametrize("control", ["connected", "reset", "gap", "error", "message", "open"])
async def test_no_one_may_publish_the_streams_control_frames(
    client: httpx.AsyncClient, token: str, control: str
) -> None:
    headers = {"Authorization": f"Token {token}"}
    one = await client.post("/api/publish", json={**EVENT, "type": control}, headers=headers)
    batch = await client.post("/api/publish", json={"events": [EVENT, {**EVENT, "type": control}]}, headers=headers)
    for response in (one, batch):
        assert response.status_code == 403, response.text
        assert response.json()["code"] == "reserved_type"
    with pytest.raises(ReservedType):
        await realtime.apublish("news.flash", control, {})


async def test_the_probes_answer_any_host_and_say_which_part_failed(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime import health

    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.7:8000") as balancer:
        assert (await balancer.get("/healthz")).json()["status"] == "ok"
        ready = await balancer.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok", "worker": "ok"}

    def locked() -> str:
        raise RuntimeError("database is locked")

    monkeypatch.setattr(health, "_adatabase", sync_to_async(locked))
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failed: RuntimeError")
    assert response.json()["checks"]["worker"] == "ok"


@pytest.mark.parametrize(
    ("topic", "event_type"),
    [
        ("video.1.likes", "like.created"),
        ("presence.member.1", "presence.changed"),
        ("member.1.inbox", "message.created"),
    ],
)
async def test_the_platforms_own_topics_are_not_publishable_through_the_api(
    client: httpx.AsyncClient, token: str, topic: str, event_type: str
) -> None:
    response = await client.post(
        "/api/publish",
        json={"topic": topic, "type": event_type, "data": {}},
        headers={"Authorization": f"Token {token}"},
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_publishable"
    assert "only" in response.json()["detail"]


async def test_an_undeclared_namespace_is_neither_readable_nor_publishable(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get("/realtime/connect?topics=chat.room")
    assert response.status_code == 403
    assert "no app declares" in response.json()["detail"]
    response = await client.post(
        "/api/publish", json={**EVENT, "topic": "chat.room"}, headers={"Authorization": f"Token {token}"}
    )
    assert response.status_code == 403
    assert response.json()["code"] == "not_publishable"


async def test_a_connection_on_a_worker_that_does_not_exist_is_refused_at_once(client: httpx.AsyncClient) -> None:
    import time

    started = time.monotonic()
    body = {"connection_id": "abc~realtime.worker.inmemory!made-up", "topics": ["news.flash"]}
    response = await client.post("/realtime/subscriptions", json=body)
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_connection"
    assert time.monotonic() - started < 1.0  # not the RPC timeout (3 s): nothing was sent to that channel


@pytest.mark.parametrize(
    "since",
    [
        "ab12:3",  # not an object
        {"other.topic": "ab12:3"},  # not one of the topics
        {"news.flash": "ab12"},
        {"news.flash": "AB12:3"},
        {"news.flash": "ab12:-3"},
        {"news.flash": {"epoch": "ab12", "offset": "x"}},
        {"news.flash": ":5"},  # an empty epoch is only "no event yet", offset 0
    ],
)
async def test_a_malformed_since_is_a_400_saying_why(client: httpx.AsyncClient, since: object) -> None:
    body = {"connection_id": "nope", "topics": ["news.flash"], "since": since}
    response = await client.post("/realtime/subscriptions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid"
    assert "since" in response.json()["errors"]


@pytest.mark.parametrize("since", ["news.flash", "news.flash:ab:x", "other.topic:ab12:3", "news.flash:AB:1"])
async def test_a_malformed_since_on_connect_is_a_400_before_the_stream_opens(
    client: httpx.AsyncClient, since: str
) -> None:
    response = await client.get(f"/realtime/connect?topics=news.flash&since={since}")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_since"
