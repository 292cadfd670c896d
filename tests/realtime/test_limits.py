"""Rate limits: one counter per scope, client and window, in this process or in Redis across workers."""

import re
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from livesite.asgi import application
from realtime import limits


def _rates(settings: Any, **rates: str) -> None:
    settings.REALTIME = {**settings.REALTIME, "RATE_LIMITS": {**settings.REALTIME["RATE_LIMITS"], **rates}}


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/s", limits.Rate(10, 1.0)), ("3/m", limits.Rate(3, 60.0)), ("1/h", limits.Rate(1, 3600.0)), ("", None)],
)
def test_rates_are_read_from_their_text(text: str, rate: limits.Rate | None) -> None:
    assert limits.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["10", "x/s", "10/d", "-1/s", "0/s"])
def test_a_malformed_rate_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not N/s"):
        limits.parse_rate(text)


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_past_the_rate_the_answer_says_when_to_retry(settings: Any, redis_url: str, store: str) -> None:
    settings.REDIS_URL = redis_url if store == "redis" else ""
    settings.REDIS_KEY_PREFIX = f"limits-{store}"
    _rates(settings, like="3/m")
    for _ in range(3):
        limits.hit("like", "member:1", now=120.0)
    with pytest.raises(limits.Limited) as refused:
        limits.hit("like", "member:1", now=150.0)
    assert refused.value.retry_after_secs == pytest.approx(30.0)
    limits.hit("like", "member:2", now=150.0)  # someone else is counted apart
    limits.hit("like", "member:1", now=180.0)  # the next window starts afresh


def test_the_proxys_address_is_believed_only_when_trusted(settings: Any) -> None:
    assert limits.client_address("10.0.0.1", "1.2.3.4, 5.6.7.8") == "10.0.0.1"
    settings.TRUST_PROXY_HEADERS = True
    assert limits.client_address("10.0.0.1", "1.2.3.4, 5.6.7.8") == "5.6.7.8"


@pytest.mark.django_db(transaction=True)
async def test_every_door_answers_429_with_retry_after(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fixed clock: a window that ended mid-test would reset the counts and the test would pass for nothing.
    monkeypatch.setattr(limits, "clock", lambda: 1_000_000.0)
    _rates(settings, connect="2/m", subscribe="2/m", publish="2/m", like="2/m", sign_in="2/m")
    settings.REALTIME = {**settings.REALTIME, "OPEN_NAMESPACES": ["news"]}

    def staff_token() -> str:
        return Token.objects.create(user=User.objects.create_superuser("limits-admin")).key

    key = await sync_to_async(staff_token)()
    headers = {"Authorization": f"Token {key}"}
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        event = {"topic": "news.flash", "type": "news.posted", "data": {}}
        page = await client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        assert token is not None
        wrong_password = {"username": "limits-admin", "password": "guess", "csrfmiddlewaretoken": token.group(1)}
        referer = {"Referer": "http://127.0.0.1/accounts/login/"}
        doors = {
            "publish": lambda: client.post("/api/publish", json=event, headers=headers),
            "subscribe": lambda: client.post(
                "/realtime/subscriptions", json={"connection_id": "gone", "topics": ["news.flash"]}, headers=headers
            ),
            "connect": lambda: client.get("/realtime/connect?topics=Bad"),  # counted before it is refused (400)
            "sign_in": lambda: client.post("/accounts/login/", data=wrong_password, headers=referer),
        }
        for scope, call in doors.items():
            for _ in range(2):
                assert (await call()).status_code != 429, scope
            refused = await call()
            assert refused.status_code == 429, (scope, refused.text)
            assert int(refused.headers["retry-after"]) >= 1
            if scope != "sign_in":
                assert refused.json()["code"] == "rate_limited"
