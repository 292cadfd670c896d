"""The ASGI entry point: API clients (a credential header, no cookie) skip the browser middleware; browsers do not."""

from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token

from livesite.asgi import application, is_api_client

pytestmark = pytest.mark.django_db(transaction=True)


def _scope(path: str, *headers: tuple[bytes, bytes], host: bytes = b"127.0.0.1:8000") -> dict[str, Any]:
    return {"type": "http", "path": path, "headers": [(b"host", host), *headers]}


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (_scope("/api/publish", (b"authorization", b"Token k")), True),
        (_scope("/realtime/subscriptions", (b"authorization", b"Token k")), True),
        (_scope("/realtime/peer/events", (b"x-livesite-signature", b"s")), True),
        (_scope("/api/publish", (b"authorization", b"Token k"), (b"cookie", b"sessionid=s")), False),
        (_scope("/api/publish"), False),
        (_scope("/api/publish", (b"authorization", b"Token k"), host=b"evil.example"), False),
        (_scope("/api/publish", (b"authorization", b"Token k"), host=b""), False),
        (_scope("/videos/x/", (b"authorization", b"Token k")), False),
        (_scope("/static/web/watch.js", (b"authorization", b"Token k")), False),
        ({"type": "websocket", "path": "/api/publish", "headers": [(b"authorization", b"Token k")]}, False),
    ],
)
def test_who_is_an_api_client(scope: dict[str, Any], expected: bool) -> None:
    assert is_api_client(scope) is expected


@pytest.fixture
def token() -> str:
    user = User.objects.create_user("svc")
    user.user_permissions.add(Permission.objects.get(codename="publish_event"))
    return Token.objects.create(user=user).key


async def _post(headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        body = {"topic": "news.flash", "type": "news.posted", "data": {"n": 1}}
        return await client.post("/api/publish", json=body, headers=headers)


async def test_a_token_client_is_served_without_the_browser_middleware(token: str) -> None:
    response = await _post({"Authorization": f"Token {token}"})
    assert response.status_code == 202
    assert len(response.json()["ids"]) == 1
    # XFrameOptionsMiddleware sets this on every response it sees.
    assert "x-frame-options" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_host_outside_allowed_hosts_is_refused_on_either_door(token: str) -> None:
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as client:
        response = await client.post(
            "/api/publish",
            json={"topic": "news.flash", "type": "news.posted", "data": {}},
            headers={"Authorization": f"Token {token}"},
        )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"


async def test_a_request_with_a_cookie_gets_the_whole_stack(token: str) -> None:
    response = await _post({"Authorization": f"Token {token}", "Cookie": "theme=dark"})
    assert response.status_code == 202
    assert response.headers["x-frame-options"] == "DENY"


async def test_a_bad_token_is_still_refused_in_json(token: str) -> None:
    response = await _post({"Authorization": "Token wrong"})
    # 403, as on the whole stack: DRF answers 401 only when its first authenticator names a scheme.
    assert response.status_code == 403
    assert response.json()["code"] == "authentication_failed"
