"""GET /api/presence: statuses of several members in one call, and 400s in the project's error shape."""

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from presence import services

pytestmark = pytest.mark.django_db

URL = "/api/presence"


@pytest.fixture
def client(presence_settings: dict[str, Any]) -> APIClient:
    services.reset_store()
    signed_in = APIClient()
    signed_in.force_authenticate(User.objects.create_user("reader"))
    return signed_in


def test_presence_is_for_signed_in_members_unless_the_operator_makes_it_public(
    presence_settings: dict[str, Any], settings: Any
) -> None:
    services.reset_store()
    anonymous = APIClient()
    response = anonymous.get(URL, {"members": "7"})
    assert response.status_code == 403
    assert response.json()["code"] == "not_authenticated"
    settings.PRESENCE = {**presence_settings, "PUBLIC": True}
    assert anonymous.get(URL, {"members": "7"}).status_code == 200


def test_statuses_in_the_order_asked(client: APIClient) -> None:
    services.get_store().beat([7], 1000.0)
    response = client.get(URL, {"members": "9,7,9"})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "members": [
            {"member": 9, "status": "offline", "last_seen": None, "changed_at": None},
            {"member": 7, "status": "online", "last_seen": 1000.0, "changed_at": 1000.0},
        ]
    }


def test_an_offline_member_keeps_last_seen_and_changed_at(client: APIClient) -> None:
    store = services.get_store()
    store.beat([7], 1000.25)
    store.sweep(1011.5, 10.0)
    assert client.get(URL, {"members": "7"}).json()["members"] == [
        {"member": 7, "status": "offline", "last_seen": 1000.25, "changed_at": 1011.5}
    ]


def test_up_to_the_limit_is_fine(client: APIClient) -> None:
    response = client.get(URL, {"members": ",".join(str(n) for n in range(1, 201))})
    assert response.status_code == 200
    assert len(response.json()["members"]) == 200


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, "give the members to look up"),
        ({"members": ""}, "at least one member id"),
        ({"members": " , "}, "at least one member id"),
        ({"members": "abc"}, "'abc' is not a member id"),
        ({"members": "1,,2"}, "'' is not a member id"),
        ({"members": "1,-2"}, "'-2' is not a member id"),
        ({"members": "0"}, "'0' is not a member id"),
        ({"members": "1.5"}, "'1.5' is not a member id"),
        ({"members": "1e3"}, "'1e3' is not a member id"),
        ({"members": "١٢"}, "is not a member id"),  # Arabic-Indic digits: decimal, but not ids
        ({"members": "9" * 30}, "is not a member id"),
        ({"members": ",".join(str(n) for n in range(1, 202))}, "at most 200 members per request (got 201)"),
    ],
)
def test_bad_input_is_a_400_saying_how_to_fix_it(client: APIClient, query: dict, message: str) -> None:
    response = client.get(URL, query)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert body["detail"] == "Invalid input: see 'errors'."
    assert message in body["errors"]["members"][0]


def test_an_unreachable_store_is_a_503_in_the_error_shape(client: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    def unreachable(member_ids: list[int]) -> list:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(services, "statuses", unreachable)
    response = client.get(URL, {"members": "1"})
    assert response.status_code == 503
    assert response.json() == {
        "detail": "the presence store (Redis) is unreachable; retry shortly",
        "code": "presence_unavailable",
    }
