"""Stream tickets: single use, short-lived, and only as good as the credential they were made with."""

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token

from realtime.tickets import TICKET_SECS, MemoryTickets, RedisTickets

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, settings: Any) -> MemoryTickets | RedisTickets:
    if request.param == "memory":
        return MemoryTickets()
    settings.REDIS_URL = request.getfixturevalue("redis_url")
    return RedisTickets()


async def test_a_ticket_is_good_once(store: MemoryTickets | RedisTickets) -> None:
    ticket = await store.aissue("token", "k3y")
    assert len(ticket) >= 43  # 256 random bits
    assert await store.atake(ticket) == ("token", "k3y")
    assert await store.atake(ticket) is None
    assert await store.atake("made-up") is None


async def test_an_expired_ticket_is_refused() -> None:
    store = MemoryTickets()
    ticket = await store.aissue("token", "k3y", now=1000.0)
    assert await store.atake(ticket, now=1000.0 + TICKET_SECS) is None


async def test_only_a_signed_in_caller_gets_a_ticket(client: httpx.AsyncClient) -> None:
    response = await client.post("/realtime/tickets")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    key = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_user("svc")).key)()
    response = await client.post("/realtime/tickets", headers={"Authorization": f"Token {key}"})
    assert response.status_code == 201
    assert response.json()["expires_in"] == TICKET_SECS


async def test_a_ticket_whose_token_was_deleted_opens_nothing(client: httpx.AsyncClient) -> None:
    token = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_user("svc")))()
    ticket = (await client.post("/realtime/tickets", headers={"Authorization": f"Token {token.key}"})).json()["ticket"]
    await sync_to_async(token.delete)()
    response = await client.get("/realtime/connect", params={"ticket": ticket})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_ticket"


async def test_an_unknown_ticket_is_a_401_before_the_stream_opens(client: httpx.AsyncClient) -> None:
    response = await client.get("/realtime/connect", params={"ticket": "x" * 43})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_ticket"


async def test_a_ticket_stands_for_its_member_and_credential(client: httpx.AsyncClient) -> None:
    from realtime import auth, revocation

    token = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_user("svc")))()
    ticket = (await client.post("/realtime/tickets", headers={"Authorization": f"Token {token.key}"})).json()["ticket"]
    caller = await auth.aauthenticate_ticket(ticket)
    assert caller.member_id == token.user_id
    # Revoking the token closes a stream opened with its ticket (realtime.revocation names it the same).
    assert caller.credential == revocation.token_credential(token.key)
