"""The REST API: answers, every error in the project's JSON shape, and nothing that says a conversation exists
to someone outside it."""

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token

from messaging.models import Conversation, Message
from tests.messaging.conftest import RECEIPT_WINDOW_SECS
from tests.messaging.factories import make_conversation, make_member, make_message

pytestmark = pytest.mark.django_db


class Api:
    """A test client speaking JSON, signed in with a DRF token (or anonymous); on_commit callbacks run."""

    def __init__(self, member: Any, capture: Any) -> None:
        self.client = Client(raise_request_exception=False)
        self.headers = (
            {"HTTP_AUTHORIZATION": f"Token {Token.objects.get_or_create(user=member)[0].key}"} if member else {}
        )
        self.capture = capture

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params, **self.headers)

    def send(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else json.dumps(body) if body is not None else b""
        with self.capture(execute=True):
            return getattr(self.client, method)(path, data, content_type="application/json", **self.headers)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.send("post", path, body, **kwargs)


@pytest.fixture
def as_member(django_capture_on_commit_callbacks) -> Any:
    return lambda member: Api(member, django_capture_on_commit_callbacks)


def assert_error(response: Any, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    return body


# -- conversations --------------------------------------------------------------------------------


def test_the_list_shows_your_conversations_most_recent_first_with_exact_unread_counts(
    as_member, group, direct, alice, bob, carol, dave, django_assert_max_num_queries
):
    make_conversation(carol, dave, title="not bob's")
    make_message(direct, alice, "hi bob")
    make_message(group, carol, "one")
    make_message(group, alice, "two")
    api = as_member(bob)
    api.get("/api/conversations")  # warm the token cache
    with django_assert_max_num_queries(6):
        response = api.get("/api/conversations")
    assert response.status_code == 200
    body = response.json()
    assert [(c["id"], c["unread"], c["last_seq"], c["last_read_seq"]) for c in body["results"]] == [
        (group.pk, 2, 2, 0),
        (direct.pk, 1, 1, 0),
    ]
    first = body["results"][0]
    assert first["title"] == "Weekend plans"
    assert first["kind"] == "group"
    assert [p["name"] for p in first["participants"]] == ["Alice", "Bob", "Carol"]
    assert first["last_message"]["text"] == "two"
    assert body["next"] is None


def test_the_list_query_count_does_not_grow_with_conversations(as_member, alice, bob, django_assert_max_num_queries):
    for n in range(12):
        conversation = make_conversation(alice, bob, make_member(f"m{n}"), title=f"g{n}")
        make_message(conversation, alice)
    api = as_member(bob)
    api.get("/api/conversations")
    with django_assert_max_num_queries(6):
        assert len(api.get("/api/conversations").json()["results"]) == 12


def test_a_conversation_is_created_and_the_one_to_one_found_again(as_member, alice, bob, carol):
    api = as_member(alice)
    response = api.post("/api/conversations", {"participants": [bob.pk, carol.pk], "title": "Trip"})
    assert response.status_code == 201, response.content
    assert response.json()["title"] == "Trip"
    assert [p["id"] for p in response.json()["participants"]] == [alice.pk, bob.pk, carol.pk]
    first = api.post("/api/conversations", {"participants": [bob.pk]})
    assert first.status_code == 201
    assert first.json()["kind"] == "direct"
    again = as_member(bob).post("/api/conversations", {"participants": [alice.pk]})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


@pytest.mark.parametrize(
    "body",
    [{}, {"participants": []}, {"participants": "2"}, {"participants": [987654]}, {"participants": [2], "title": 5}],
)
def test_a_bad_conversation_is_a_400(as_member, alice, bob, body):
    body = assert_error(as_member(alice).post("/api/conversations", body), 400, "invalid")
    assert body["errors"]


def test_a_group_past_the_limit_is_a_400(as_member, alice, settings):
    settings.MESSAGING = {**settings.MESSAGING, "MAX_PARTICIPANTS": 3}
    others = [make_member(f"p{n}").pk for n in range(3)]
    body = assert_error(as_member(alice).post("/api/conversations", {"participants": others}), 400, "invalid")
    assert "at most 3" in body["errors"]["participants"][0]


OUTSIDE_PATHS = [
    ("get", "/api/conversations/{c}"),
    ("get", "/api/conversations/{c}/messages"),
    ("post", "/api/conversations/{c}/messages"),
    ("patch", "/api/conversations/{c}/messages/{m}"),
    ("delete", "/api/conversations/{c}/messages/{m}"),
    ("post", "/api/conversations/{c}/typing"),
    ("post", "/api/conversations/{c}/read"),
    ("post", "/api/conversations/{c}/participants"),
    ("delete", "/api/conversations/{c}/participants/{m}"),
]
BODIES = {"post": {"text": "hi", "typing": True, "message": 1, "member": 1}, "patch": {"text": "hi"}}


@pytest.mark.parametrize(("method", "path"), OUTSIDE_PATHS)
def test_a_conversation_you_are_not_in_answers_exactly_as_one_that_does_not_exist(
    as_member, group, alice, dave, method, path
):
    message = make_message(group, alice)
    api = as_member(dave)
    theirs = api.send(method, path.format(c=group.pk, m=message.pk), BODIES.get(method))
    missing = api.send(method, path.format(c=group.pk + 1000, m=message.pk), BODIES.get(method))
    assert_error(theirs, 404, "conversation_not_found")
    assert_error(missing, 404, "conversation_not_found")
    assert theirs.json()["detail"].replace(str(group.pk), "N") == missing.json()["detail"].replace(
        str(group.pk + 1000), "N"
    )
    assert Message.objects.count() == 1


@pytest.mark.parametrize("raw_id", ["abc", "-1", "1" * 40, "0x1"])
def test_a_malformed_id_is_a_404_not_a_500(as_member, alice, raw_id):
    assert_error(as_member(alice).get(f"/api/conversations/{raw_id}/messages"), 404, "conversation_not_found")


def test_anonymous_callers_are_refused(db, client):
    response = client.get("/api/conversations")
    assert_error(response, 403, "not_authenticated")


# -- messages -------------------------------------------------------------------------------------


def test_sending_answers_the_stored_message(as_member, group, alice, published):
    response = as_member(alice).post(f"/api/conversations/{group.pk}/messages", {"text": " hello "})
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["text"], body["seq"], body["author"]["id"]) == ("hello", 1, alice.pk)
    assert [(e.type, e.data) for e in published] == [("message.created", body)]


@pytest.mark.parametrize("text", ["", "   ", "x" * 4001, None, 7])
def test_empty_or_oversized_text_is_a_400(as_member, group, alice, text):
    body = assert_error(
        as_member(alice).post(f"/api/conversations/{group.pk}/messages", {"text": text}), 400, "invalid"
    )
    assert "text" in body["errors"]


def test_a_body_past_the_upload_limit_is_a_413(as_member, group, alice, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = as_member(alice).post(f"/api/conversations/{group.pk}/messages", {"text": "x" * 20_000})
    assert_error(response, 413, "too_large")


def test_messages_page_oldest_first_with_links_to_older_and_newer(as_member, group, alice):
    for n in range(1, 8):
        make_message(group, alice, f"m{n}")
    api = as_member(alice)
    newest = api.get(f"/api/conversations/{group.pk}/messages", limit=3).json()
    assert [m["seq"] for m in newest["results"]] == [5, 6, 7]
    assert newest["newer"] is None
    assert "before=5" in newest["older"]
    older = api.get(newest["older"]).json()
    assert [m["seq"] for m in older["results"]] == [2, 3, 4]
    oldest = api.get(older["older"]).json()
    assert [m["seq"] for m in oldest["results"]] == [1]
    assert oldest["older"] is None
    assert "after=1" in oldest["newer"]
    after = api.get(f"/api/conversations/{group.pk}/messages", after=5).json()
    assert [m["seq"] for m in after["results"]] == [6, 7]
    assert after["newer"] is None


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"before": "x"}, {"before": 3, "after": 1}])
def test_a_bad_page_query_is_a_400(as_member, group, alice, query):
    assert_error(as_member(alice).get(f"/api/conversations/{group.pk}/messages", **query), 400, "invalid")


def test_editing_and_deleting_are_for_the_author_and_a_deleted_message_cannot_be_edited(as_member, group, alice, bob):
    message = make_message(group, alice, "helo")
    path = f"/api/conversations/{group.pk}/messages/{message.pk}"
    assert_error(as_member(bob).send("patch", path, {"text": "hijack"}), 403, "not_author")
    assert_error(as_member(bob).send("delete", path), 403, "not_author")
    alice_api = as_member(alice)
    edited = alice_api.send("patch", path, {"text": "hello"})
    assert edited.status_code == 200
    assert edited.json()["text"] == "hello"
    assert edited.json()["edited"]
    assert alice_api.send("delete", path).status_code == 204
    assert alice_api.send("delete", path).status_code == 204  # again: nothing changes
    assert_error(alice_api.send("patch", path, {"text": "undo"}), 409, "message_deleted")
    assert_error(
        alice_api.send("patch", f"/api/conversations/{group.pk}/messages/999999", {"text": "x"}),
        404,
        "message_not_found",
    )


def test_a_message_of_another_conversation_is_not_found_here(as_member, group, direct, alice):
    other = make_message(direct, alice)
    response = as_member(alice).send("patch", f"/api/conversations/{group.pk}/messages/{other.pk}", {"text": "x"})
    assert_error(response, 404, "message_not_found")


def test_sending_faster_than_the_limit_is_a_429_with_retry_after(as_member, group, alice, settings):
    settings.MESSAGING = {**settings.MESSAGING, "RATE_LIMITS": "message=3/m"}
    api = as_member(alice)
    answers = [api.post(f"/api/conversations/{group.pk}/messages", {"text": f"m{n}"}) for n in range(4)]
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    body = assert_error(answers[-1], 429, "rate_limited")
    assert "message" in body["detail"]
    assert 1 <= int(answers[-1]["Retry-After"]) <= 60
    assert Message.objects.count() == 3


# -- typing and reading ---------------------------------------------------------------------------


def test_typing_answers_what_it_announced_and_when_to_call_again(as_member, group, bob, published):
    api = as_member(bob)
    path = f"/api/conversations/{group.pk}/typing"
    first = api.post(path, {"typing": True})
    assert first.json() == {"typing": True, "announced": True, "shown": True, "retry_in": 0.0, "expires_in": 6.0}
    refresh = api.post(path, {"typing": True}).json()
    assert (refresh["announced"], refresh["shown"]) == (False, True)
    stop = api.post(path, {"typing": False})
    assert stop.json() == {"typing": False, "announced": True, "shown": False, "retry_in": 0.0, "expires_in": 0.0}
    # Typing again at once: not shown before the throttle window ends, and the answer says when to call again.
    again = api.post(path, {"typing": True}).json()
    assert (again["announced"], again["shown"]) == (False, False)
    assert 0 < again["retry_in"] <= 2.0
    assert [e.data["typing"] for e in published] == [True, False]


@pytest.mark.parametrize("body", [{}, {"typing": "yes"}, {"typing": 1}, {"typing": None}])
def test_typing_takes_only_a_boolean(as_member, group, bob, body):
    assert_error(as_member(bob).post(f"/api/conversations/{group.pk}/typing", body), 400, "invalid")


def test_typing_faster_than_the_limit_is_a_429(as_member, group, bob, settings):
    settings.MESSAGING = {**settings.MESSAGING, "RATE_LIMITS": "typing=2/m"}
    api = as_member(bob)
    statuses = [api.post(f"/api/conversations/{group.pk}/typing", {"typing": True}).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_reading_answers_the_mark_and_unread_count_and_never_goes_back(
    as_member, group, alice, bob, published, scheduler
):
    first, second = make_message(group, alice, "one"), make_message(group, alice, "two")
    api = as_member(bob)
    assert api.post(f"/api/conversations/{group.pk}/read", {"message": second.pk}).json() == {
        "last_read_seq": 2,
        "unread": 0,
    }
    assert api.post(f"/api/conversations/{group.pk}/read", {"message": first.pk}).json() == {
        "last_read_seq": 2,
        "unread": 0,
    }
    scheduler.advance(RECEIPT_WINDOW_SECS)
    assert [e.data["seq"] for e in published.of_type("receipt.seen")] == [2]
    assert api.get("/api/conversations").json()["results"][0]["unread"] == 0


def test_reading_a_message_that_is_not_here_is_a_400(as_member, group, direct, alice, bob):
    elsewhere = make_message(direct, alice)
    body = assert_error(
        as_member(bob).post(f"/api/conversations/{group.pk}/read", {"message": elsewhere.pk}), 400, "invalid"
    )
    assert "message" in body["errors"]


def test_the_schema_documents_every_messaging_operation(client, db):
    paths = client.get("/api/schema", HTTP_ACCEPT="application/json").json()["paths"]
    assert set(paths["/api/conversations"]) >= {"get", "post"}
    assert set(paths["/api/conversations/{conversation_id}/messages/{message_id}"]) >= {"patch", "delete"}
    post = paths["/api/conversations/{conversation_id}/messages"]["post"]
    assert {"201", "400", "404", "429"} <= set(post["responses"])
    assert "409" in paths["/api/conversations/{conversation_id}/messages/{message_id}"]["patch"]["responses"]
    add = paths["/api/conversations/{conversation_id}/participants"]["post"]
    assert {"200", "201", "400", "403", "404", "409"} <= set(add["responses"])
    remove = paths["/api/conversations/{conversation_id}/participants/{member_id}"]["delete"]
    assert {"204", "403", "404", "409", "503"} <= set(remove["responses"])
    assert Conversation.objects.count() == 0


# -- participants -----------------------------------------------------------------------------------


@pytest.fixture
def owned_group(group: Any, alice: Any) -> Any:
    group.created_by = alice
    group.save(update_fields=["created_by"])
    return group


def participants_path(conversation: Any, member: Any = None) -> str:
    path = f"/api/conversations/{conversation.pk}/participants"
    return path if member is None else f"{path}/{member if isinstance(member, str) else member.pk}"


def topics_of(conversation: Any) -> list[str]:
    return [f"conversation.{conversation.pk}.{name}" for name in ("messages", "typing", "receipts")]


def test_the_creator_adds_a_member_who_is_told_and_may_read_it_at_once(as_member, owned_group, alice, dave, published):
    api = as_member(alice)
    response = api.post(participants_path(owned_group), {"member": dave.pk})
    assert response.status_code == 201, response.content
    assert [p["id"] for p in response.json()["participants"]][-1] == dave.pk
    assert published.summary() == [
        (f"member.{dave.pk}.conversations", "conversation.added"),
        (f"conversation.{owned_group.pk}.messages", "participant.added"),
    ]
    assert published.on(f"conversation.{owned_group.pk}.messages")[0].data == {
        "conversation": owned_group.pk,
        "member": {"id": dave.pk, "name": "Dave"},
    }
    assert as_member(dave).get(f"/api/conversations/{owned_group.pk}").status_code == 200
    # Again: she is in it already; nothing changes and nothing is announced.
    again = api.post(participants_path(owned_group), {"member": dave.pk})
    assert again.status_code == 200
    assert len(published) == 2


def test_staff_may_manage_a_group_they_take_part_in(as_member, owned_group, carol, dave, published):
    carol.is_staff = True
    carol.save()
    assert as_member(carol).post(participants_path(owned_group), {"member": dave.pk}).status_code == 201
    assert as_member(carol).send("delete", participants_path(owned_group, dave)).status_code == 204
    assert [r[0] for r in published.revoked] == [dave.pk]


def test_others_may_not_add_or_remove_but_anyone_may_leave(as_member, owned_group, bob, carol, dave, published):
    response = as_member(bob).post(participants_path(owned_group), {"member": dave.pk})
    assert_error(response, 403, "not_conversation_admin")
    assert_error(as_member(bob).send("delete", participants_path(owned_group, carol)), 403, "not_conversation_admin")
    assert (published.revoked, list(published)) == ([], [])
    assert as_member(bob).send("delete", participants_path(owned_group, bob)).status_code == 204
    assert published.revoked == [(bob.pk, topics_of(owned_group), "removed_from_conversation")]
    assert_error(as_member(bob).get(f"/api/conversations/{owned_group.pk}"), 404, "conversation_not_found")


def test_the_creator_removes_a_member_who_loses_it_live(as_member, owned_group, alice, carol, published):
    assert as_member(alice).send("delete", participants_path(owned_group, carol)).status_code == 204
    assert published.revoked == [(carol.pk, topics_of(owned_group), "removed_from_conversation")]
    assert published.summary() == [
        (f"member.{carol.pk}.conversations", "conversation.removed"),
        (f"conversation.{owned_group.pk}.messages", "participant.removed"),
    ]
    assert published.of_type("participant.removed")[0].data == {"conversation": owned_group.pk, "member": carol.pk}
    # Not in it any more: a second removal is a 404.
    response = as_member(alice).send("delete", participants_path(owned_group, carol))
    assert_error(response, 404, "participant_not_found")


@pytest.mark.parametrize("member", ["987654", "abc", "1" * 40, "-1"])
def test_removing_someone_who_is_not_there_is_a_404(as_member, owned_group, alice, member):
    response = as_member(alice).send("delete", participants_path(owned_group, member))
    assert_error(response, 404, "participant_not_found")


def test_a_one_to_one_conversation_keeps_its_two_members(as_member, direct, alice, bob, dave):
    api = as_member(alice)
    assert_error(api.post(participants_path(direct), {"member": dave.pk}), 409, "direct_conversation")
    assert_error(api.send("delete", participants_path(direct, bob)), 409, "direct_conversation")
    assert_error(api.send("delete", participants_path(direct, alice)), 409, "direct_conversation")
    assert direct.participants.count() == 2


def test_a_full_group_takes_no_one_more(as_member, owned_group, alice, dave, settings):
    settings.MESSAGING = {**settings.MESSAGING, "MAX_PARTICIPANTS": 3}
    response = as_member(alice).post(participants_path(owned_group), {"member": dave.pk})
    assert "at most 3" in assert_error(response, 409, "conversation_full")["detail"]
    assert owned_group.participants.count() == 3


@pytest.mark.parametrize(
    "body", [{}, {"member": "x"}, {"member": 0}, {"member": None}, {"member": 987654}, {"member": 2**70}, [1]]
)
def test_a_bad_member_to_add_is_a_400(as_member, owned_group, alice, body):
    assert_error(as_member(alice).post(participants_path(owned_group), body), 400, "invalid")


def test_an_inactive_member_cannot_be_added(as_member, owned_group, alice, dave):
    dave.is_active = False
    dave.save()
    response = as_member(alice).post(participants_path(owned_group), {"member": dave.pk})
    assert assert_error(response, 400, "invalid")["errors"]["member"]


def test_a_removal_that_cannot_reach_the_workers_is_a_503_and_changes_nothing(
    as_member, owned_group, alice, carol, settings, published
):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    response = as_member(alice).send("delete", participants_path(owned_group, carol))
    assert_error(response, 503, "access_unavailable")
    assert owned_group.participants.filter(member=carol).exists()
    assert (published.revoked, list(published)) == ([], [])
