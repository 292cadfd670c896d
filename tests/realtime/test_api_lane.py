"""POST /api/publish has two doors: the fast lane for token clients and the DRF view. They answer alike."""

import json
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token

from livesite.asgi import application
from realtime import api, api_lane
from realtime.api import MAX_BATCH
from realtime.dispatcher import DispatchUnavailable

pytestmark = pytest.mark.django_db(transaction=True)

# A cookie sends the request through the whole Django stack to the DRF view; without one, a token client
# takes the lane. The cookie carries no session, so both doors see the same anonymous-but-for-the-token client.
THROUGH_DJANGO = {"Cookie": "theme=dark"}


def _event(**fields: Any) -> dict[str, Any]:
    return {"topic": "news.flash", "type": "news.posted", "data": {"n": 1}, **fields}


@pytest.fixture
def tokens_by_name() -> dict[str, str]:
    publisher = User.objects.create_user("svc")
    publisher.user_permissions.add(Permission.objects.get(codename="publish_event"))
    member = User.objects.create_user("member")
    return {
        "publisher": Token.objects.create(user=publisher).key,
        "member": Token.objects.create(user=member).key,
        "admin": Token.objects.create(user=User.objects.create_superuser("root")).key,
    }


async def _post(
    content: Any,
    *,
    token: str | None,
    content_type: str = "application/json",
    path: str = "/api/publish",
    **headers: str,
) -> httpx.Response:
    sent: list[tuple[str, str]] = [("Content-Type", content_type), *headers.items()]
    if token is not None:
        for one in token.split("|"):  # "a|b": two Authorization headers
            sent.append(("Authorization", one if " " in one else f"Token {one}"))
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.post(path, content=content, headers=sent)


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


async def _warm(token: str) -> None:
    # The first request of a token goes through Django (the lane knows only cached tokens) and caches it.
    await _post(_json(_event()), token=token)


CASES = [
    ("one event", _json(_event()), "publisher", "application/json"),
    ("a batch", _json({"events": [_event(), _event(topic="news.other"), _event()]}), "publisher", "application/json"),
    ("superuser", _json(_event()), "admin", "application/json"),
    ("bad topic", _json(_event(topic="Bad Topic")), "publisher", "application/json"),
    ("bad type", _json(_event(type="NOT OK")), "publisher", "application/json"),
    ("no data", _json({"topic": "news.flash", "type": "news.posted"}), "publisher", "application/json"),
    ("one bad in a batch", _json({"events": [_event(), _event(topic="BAD")]}), "publisher", "application/json"),
    ("empty batch", _json({"events": []}), "publisher", "application/json"),
    ("batch too long", _json({"events": [_event()] * (MAX_BATCH + 1)}), "publisher", "application/json"),
    ("a list", _json([_event()]), "publisher", "application/json"),
    ("not JSON", b"{nope", "publisher", "application/json"),
    ("NaN", b'{"topic": "news.flash", "type": "news.posted", "data": NaN}', "publisher", "application/json"),
    ("empty body", b"", "publisher", "application/json"),
    ("charset", _json(_event()), "publisher", "application/json; charset=utf-8"),
    ("text body", b"hello", "publisher", "text/plain"),
    ("event too large", _json(_event(data="x" * 70_000)), "publisher", "application/json"),
    ("nested too deeply", b"[" * 100_000, "publisher", "application/json"),
    ("utf-16", json.dumps(_event()).encode("utf-16"), "publisher", "application/json; charset=utf-16"),
    ("a byte-order mark", b"\xef\xbb\xbf" + _json(_event()), "publisher", "application/json"),
    ("two tokens", _json(_event()), "publisher|member", "application/json"),
    ("body past the upload limit", _json(_event(data="x" * 3_000_000)), "publisher", "application/json"),
    ("no permission", _json(_event()), "member", "application/json"),
    ("unknown token", _json(_event()), "Token not-a-key", "application/json"),
    ("other scheme", _json(_event()), "Bearer abc", "application/json"),
    ("token with spaces", _json(_event()), "Token a b", "application/json"),
]


@pytest.mark.parametrize(("body", "who", "content_type"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
async def test_both_doors_give_the_same_answer(
    tokens_by_name: dict[str, str], body: bytes, who: str, content_type: str
) -> None:
    token = tokens_by_name.get(who, who)
    for name in ("publisher", "member", "admin"):
        await _warm(tokens_by_name[name])
    lane = await _post(body, token=token, content_type=content_type)
    view = await _post(body, token=token, content_type=content_type, **THROUGH_DJANGO)
    assert lane.status_code == view.status_code
    assert lane.headers["content-type"] == view.headers["content-type"] == "application/json"
    if lane.status_code == 202:
        assert len(lane.json()["ids"]) == len(view.json()["ids"])
    else:
        assert lane.json() == view.json()
        assert 400 <= lane.status_code < 500


async def test_a_cached_token_with_good_events_is_served_by_the_lane(tokens_by_name: dict[str, str]) -> None:
    first = await _post(_json(_event()), token=tokens_by_name["publisher"])
    second = await _post(_json(_event()), token=tokens_by_name["publisher"])
    assert first.status_code == second.status_code == 202
    # DRF's responses name the allowed methods; the lane's do not.
    assert "allow" in first.headers
    assert "allow" not in second.headers
    assert second.headers["x-content-type-options"] == "nosniff"


async def test_a_dispatcher_outage_is_the_same_503(
    tokens_by_name: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _warm(tokens_by_name["publisher"])

    async def down(items: Any) -> Any:
        raise DispatchUnavailable("redis is down")

    def down_sync(items: Any) -> Any:
        raise DispatchUnavailable("redis is down")

    monkeypatch.setattr(api_lane, "apublish_many", down)
    monkeypatch.setattr(api, "publish_many", down_sync)
    lane = await _post(_json(_event()), token=tokens_by_name["publisher"])
    view = await _post(_json(_event()), token=tokens_by_name["publisher"], **THROUGH_DJANGO)
    assert lane.status_code == view.status_code == 503
    assert lane.json() == view.json()
    assert lane.json()["code"] == "dispatch_unavailable"


async def test_a_client_gone_before_its_body_gets_no_answer() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def fallback(*args: Any) -> None:
        raise AssertionError("nothing to hand over")

    scope = {"type": "http", "method": "POST", "path": "/api/publish", "headers": []}
    await api_lane.publish(scope, receive, send, fallback)
    assert sent == []


async def test_what_the_size_limits_say(tokens_by_name: dict[str, str]) -> None:
    await _warm(tokens_by_name["publisher"])
    too_big = await _post(_json(_event(data="x" * 70_000)), token=tokens_by_name["publisher"])
    assert too_big.status_code == 400
    assert "REALTIME_MAX_EVENT_BYTES" in too_big.json()["errors"]["data"][0]
    past_limit = await _post(_json(_event(data="x" * 3_000_000)), token=tokens_by_name["publisher"])
    assert past_limit.status_code == 413
    assert past_limit.json()["code"] == "too_large"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/publish", {"Accept": "application/xml"}),
        ("/api/publish", {"Accept": "text/html"}),
        ("/api/publish?format=xml", {}),
        ("/api/publish?format=json", {}),
    ],
    ids=["accept xml", "accept html", "format xml", "format json"],
)
async def test_content_negotiation_is_the_views(
    tokens_by_name: dict[str, str], path: str, headers: dict[str, str]
) -> None:
    await _warm(tokens_by_name["publisher"])
    body = _json(_event())
    lane = await _post(body, token=tokens_by_name["publisher"], path=path, **headers)
    view = await _post(body, token=tokens_by_name["publisher"], path=path, **headers, **THROUGH_DJANGO)
    assert lane.status_code == view.status_code
    assert lane.headers["content-type"] == view.headers["content-type"]
    # Handed over, not served here: DRF's responses name the allowed methods.
    assert "allow" in lane.headers


async def test_a_body_past_the_limit_in_server_sized_chunks_is_handed_over(tokens_by_name: dict[str, str]) -> None:
    await _warm(tokens_by_name["publisher"])
    # A batch of small events (each well under REALTIME_MAX_EVENT_BYTES) whose body passes the upload limit
    # by a few bytes: only the size check can refuse it.
    events = [_event(data="x" * 5_165) for _ in range(MAX_BATCH)]
    body = _json({"events": events})
    padding = 2_621_440 - len(body) + 5
    events[0]["data"] += "x" * padding
    body = _json({"events": events})
    assert 2_621_440 < len(body) < 2_621_440 + 100

    async def chunks() -> Any:
        for start in range(0, len(body), 8192):  # as Daphne hands a body over
            yield body[start : start + 8192]

    # Content-Length as a client sends it; the body itself arrives in pieces.
    response = await _post(chunks(), token=tokens_by_name["publisher"], **{"Content-Length": str(len(body))})
    assert response.status_code == 413
    assert response.json()["code"] == "too_large"


async def test_the_size_limit_counts_the_last_piece_too(tokens_by_name: dict[str, str]) -> None:
    # Daphne hands a body over in pieces, the last with more_body false: a limit checked only on the pieces
    # before it let a body a few bytes over through.
    await _warm(tokens_by_name["publisher"])
    events = [_event(data="x" * 5_165) for _ in range(MAX_BATCH)]
    body = _json({"events": events})
    events[0]["data"] += "x" * (2_621_440 - len(body) + 5)
    body = _json({"events": events})
    pieces = [body[start : start + 8192] for start in range(0, len(body), 8192)]
    messages = [{"type": "http.request", "body": piece, "more_body": True} for piece in pieces]
    messages[-1]["more_body"] = False
    handed_over: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError(f"the lane answered itself: {message}")

    async def fallback(scope: dict, replay: Any, send: Any) -> None:
        handed_over.append(await replay())

    headers = [
        (b"authorization", f"Token {tokens_by_name['publisher']}".encode()),
        (b"content-type", b"application/json"),
    ]
    scope = {"type": "http", "method": "POST", "path": "/api/publish", "query_string": b"", "headers": headers}
    await api_lane.publish(scope, receive, send, fallback)
    assert handed_over == [{"type": "http.request", "body": body, "more_body": False}]
