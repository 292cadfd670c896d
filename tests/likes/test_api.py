"""The REST API: answers, every error in the project's JSON shape, and no input that gives a 500."""

import base64
import json
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from likes import services
from likes.models import Comment, LiveVideo
from tests.likes.conftest import WINDOW_SECS
from tests.likes.factories import make_comment, make_member, make_video

pytestmark = pytest.mark.django_db


class Api:
    """A test client speaking JSON, signed in with a DRF token (or anonymous)."""

    def __init__(self, member: Any = None, *, capture: Any = None) -> None:
        self.client = Client(raise_request_exception=False)
        self.headers = {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=member).key}"} if member else {}
        self.capture = capture

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params, **self.headers)

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, content_type: str = "application/json"):
        data = raw if raw is not None else json.dumps(body) if body is not None else b""
        # on_commit callbacks run as they would after a real request's commit.
        with self.capture(execute=True):
            return self.client.post(path, data, content_type=content_type, **self.headers)


@pytest.fixture
def api(alice, django_capture_on_commit_callbacks) -> Api:
    return Api(alice, capture=django_capture_on_commit_callbacks)


@pytest.fixture
def anonymous(db, django_capture_on_commit_callbacks) -> Api:
    return Api(capture=django_capture_on_commit_callbacks)


def assert_error(response: Any, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["code"] == code
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# -- videos ---------------------------------------------------------------------------------------


def test_video_detail_has_its_counts(api, video, alice, bob):
    make_comment(video, alice)
    make_comment(video, bob, hidden=True)
    api.post(f"/api/videos/{video.pk}/likes")
    api.post(f"/api/videos/{video.pk}/likes")
    body = api.get(f"/api/videos/{video.pk}").json()
    assert body == {
        "id": video.pk,
        "title": video.title,
        "slug": "keynote",
        "description": "",
        "status": "live",
        "started_at": body["started_at"],
        "ended_at": None,
        "owner": {"id": alice.pk, "name": "Alice"},
        "like_count": 2,
        "comment_count": 1,
        "viewer_count": 0,
    }


def test_viewer_count_comes_from_the_census(anonymous, video):
    from asgiref.sync import async_to_sync

    from realtime.census import get_store

    async def report() -> None:
        await get_store().areport("worker-1", {f"video.{video.pk}.likes": 3}, now=9e9, stale_before=0)

    async_to_sync(report)()
    try:
        assert anonymous.get(f"/api/videos/{video.pk}").json()["viewer_count"] == 3
    finally:

        async def clear() -> None:
            await get_store().areport("worker-1", {f"video.{video.pk}.likes": 0}, now=9e9, stale_before=0)

        async_to_sync(clear)()


def test_viewer_count_is_null_where_the_census_does_not_count(anonymous, video, settings):
    settings.REALTIME = {**settings.REALTIME, "CENSUS_TOPICS": ""}
    assert anonymous.get(f"/api/videos/{video.pk}").json()["viewer_count"] is None


def test_video_list_is_newest_first_filterable_and_has_no_query_per_video(
    anonymous, alice, django_assert_max_num_queries
):
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    for n in range(5):
        make_video(alice, f"v{n}", started_at=now - timedelta(minutes=n))
    make_video(alice, "old", ended=True, started_at=now - timedelta(days=1))
    with django_assert_max_num_queries(2):
        body = anonymous.get("/api/videos").json()
    assert [video["slug"] for video in body["results"]] == ["v0", "v1", "v2", "v3", "v4", "old"]
    assert [v["slug"] for v in anonymous.get("/api/videos", status="ended").json()["results"]] == ["old"]
    page = anonymous.get("/api/videos", page_size=4).json()
    assert len(page["results"]) == 4
    rest = anonymous.client.get(page["next"]).json()
    assert [video["slug"] for video in rest["results"]] == ["v4", "old"]


def test_video_list_refuses_an_unknown_status(anonymous):
    body = assert_error(anonymous.get("/api/videos", status="paused"), 400, "invalid")
    assert "status" in body["errors"]


# "\u0661" is an Arabic-Indic digit one: str.isdigit() and int() take it.
@pytest.mark.parametrize(
    "raw_id", ["999999", "abc", "-1", "1.5", "0x1", "99999999999999999999999", "\u0661", "%00", "1%20"]
)
def test_an_id_that_names_no_video_is_a_json_404_everywhere(api, raw_id):
    for response in [
        api.get(f"/api/videos/{raw_id}"),
        api.get(f"/api/videos/{raw_id}/comments"),
        api.post(f"/api/videos/{raw_id}/likes"),
        api.post(f"/api/videos/{raw_id}/comments", {"text": "hi"}),
    ]:
        assert_error(response, 404, "video_not_found")


# -- likes ----------------------------------------------------------------------------------------


def test_a_like_answers_201_with_the_exact_total(api, video, bob, published, scheduler):
    assert api.post(f"/api/videos/{video.pk}/likes").json() == {"count": 1}
    services.like_video(video, bob)
    response = api.post(f"/api/videos/{video.pk}/likes", {"ignored": True})
    assert response.status_code == 201
    assert response.json() == {"count": 3}
    scheduler.advance(WINDOW_SECS)
    assert [event.data["count"] for event in published.of_type("like.created")] == [3]


def test_an_ended_video_refuses_likes_with_409(api, ended_video):
    assert_error(api.post(f"/api/videos/{ended_video.pk}/likes"), 409, "video_ended")


def test_liking_needs_a_signed_in_member(anonymous, video):
    assert_error(anonymous.post(f"/api/videos/{video.pk}/likes"), 403, "not_authenticated")
    assert LiveVideo.objects.get(pk=video.pk).like_count == 0


def test_a_bad_token_is_refused(anonymous, video):
    anonymous.headers = {"HTTP_AUTHORIZATION": "Token not-a-real-key"}
    assert_error(anonymous.post(f"/api/videos/{video.pk}/likes"), 403, "authentication_failed")


def test_a_session_post_needs_the_csrf_token(alice, video, django_capture_on_commit_callbacks):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert_error(client.post(f"/api/videos/{video.pk}/likes"), 403, "permission_denied")
    client.cookies["csrftoken"] = secret = "k" * 32  # what a page would have from Django's CSRF cookie
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/videos/{video.pk}/likes", HTTP_X_CSRFTOKEN=secret)
    assert response.status_code == 201, response.content


# -- comments -------------------------------------------------------------------------------------


def test_a_comment_answers_201_with_the_comment_and_announces_the_same_json(api, video, alice, published):
    response = api.post(f"/api/videos/{video.pk}/comments", {"text": "  Hello, world  "})
    assert response.status_code == 201, response.content
    body = response.json()
    comment = Comment.objects.get()
    assert body == {
        "id": comment.pk,
        "video": video.pk,
        "member": {"id": alice.pk, "name": "Alice"},
        "text": "Hello, world",
        "created": body["created"],
        "hidden": False,
    }
    [event] = published
    assert (event.topic, event.type, event.data) == (f"video.{video.pk}.comments", "comment.created", body)


def test_an_ended_video_refuses_comments_with_409(api, ended_video):
    assert_error(api.post(f"/api/videos/{ended_video.pk}/comments", {"text": "hi"}), 409, "video_ended")


def test_commenting_needs_a_signed_in_member(anonymous, video):
    assert_error(anonymous.post(f"/api/videos/{video.pk}/comments", {"text": "hi"}), 403, "not_authenticated")


@pytest.mark.parametrize(
    "body",
    [
        {"text": ""},
        {"text": "   \n\t "},
        {"text": "x" * 1001},
        {"text": "x" * 100_000},
        {},
        {"text": None},
        {"text": 5},
        {"text": True},
        {"text": ["hi"]},
        {"text": {"hi": 1}},
        {"text": "nul \x00 inside"},
    ],
    ids=["empty", "blank", "1001", "huge", "missing", "null", "number", "bool", "list", "object", "nul"],
)
def test_a_bad_comment_is_a_400_naming_the_text_field(api, video, body):
    response = api.post(f"/api/videos/{video.pk}/comments", body)
    assert_error(response, 400, "invalid")
    assert list(response.json()["errors"]) == ["text"]
    assert Comment.objects.count() == 0


@pytest.mark.parametrize(
    ("raw", "content_type", "code"),
    [
        (b'{"text": "\\ud800"}', "application/json", "invalid"),  # a lone surrogate
        (b"[1, 2]", "application/json", "invalid"),
        (b'"just a string"', "application/json", "invalid"),
        (b"null", "application/json", "invalid"),
        (b'{"text": ', "application/json", "parse_error"),
        (b"\xff\xfe", "application/json", "parse_error"),
        (b"text=hi", "text/plain", "unsupported_media_type"),
    ],
)
def test_a_malformed_body_is_a_json_error_not_a_500(api, video, raw, content_type, code):
    response = api.post(f"/api/videos/{video.pk}/comments", raw=raw, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert_error(response, response.status_code, code)
    assert Comment.objects.count() == 0


def test_a_body_past_the_upload_limit_is_a_json_413(api, video, settings):
    response = api.post(f"/api/videos/{video.pk}/comments", {"text": "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    assert_error(response, 413, "too_large")


def test_a_comment_of_1000_characters_is_taken(api, video):
    assert api.post(f"/api/videos/{video.pk}/comments", {"text": "é" * 1000}).status_code == 201


def test_comments_are_newest_first_in_cursor_pages(anonymous, video, alice):
    comments = [make_comment(video, alice, f"c{n}") for n in range(5)]
    page = anonymous.get(f"/api/videos/{video.pk}/comments", page_size=3).json()
    assert [c["text"] for c in page["results"]] == ["c4", "c3", "c2"]
    assert page["previous"] is None
    rest = anonymous.client.get(page["next"]).json()
    assert [c["text"] for c in rest["results"]] == ["c1", "c0"]
    assert rest["next"] is None
    assert rest["results"][-1]["id"] == comments[0].pk


def test_hidden_comments_are_left_out_except_for_staff(
    anonymous, video, alice, bob, django_capture_on_commit_callbacks
):
    make_comment(video, alice, "visible")
    make_comment(video, bob, "spam", hidden=True)
    assert [c["text"] for c in anonymous.get(f"/api/videos/{video.pk}/comments").json()["results"]] == ["visible"]
    member = Api(alice, capture=django_capture_on_commit_callbacks)
    assert [c["text"] for c in member.get(f"/api/videos/{video.pk}/comments").json()["results"]] == ["visible"]
    staff = Api(make_member("mod", is_staff=True), capture=django_capture_on_commit_callbacks)
    listed = staff.get(f"/api/videos/{video.pk}/comments").json()["results"]
    assert [(c["text"], c["hidden"]) for c in listed] == [("spam", True), ("visible", False)]


def test_comments_of_an_ended_video_can_still_be_read(anonymous, ended_video, alice):
    make_comment(ended_video, alice, "from yesterday")
    assert anonymous.get(f"/api/videos/{ended_video.pk}/comments").json()["results"][0]["text"] == "from yesterday"


def _cursor(query: str) -> str:
    return base64.b64encode(query.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["garbage", _cursor("p=not-a-date"), _cursor("o=-5"), _cursor("p=2026-13-45T99:00:00"), _cursor("r=1&p=\x00")],
)
def test_a_forged_cursor_is_a_404_not_a_500(anonymous, video, alice, cursor):
    make_comment(video, alice)
    assert_error(anonymous.get(f"/api/videos/{video.pk}/comments", cursor=cursor), 404, "invalid_cursor")
    assert_error(anonymous.get("/api/videos", cursor=cursor), 404, "invalid_cursor")


def test_a_wrong_method_is_a_json_405(api, video):
    assert_error(api.client.delete(f"/api/videos/{video.pk}/likes", **api.headers), 405, "method_not_allowed")
    assert_error(api.post("/api/videos", {"title": "x"}), 405, "method_not_allowed")


# -- schema ---------------------------------------------------------------------------------------


def test_the_schema_validates_without_warnings_and_covers_every_endpoint(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in [
        "/api/videos:",
        "/api/videos/{video_id}:",
        "/api/videos/{video_id}/likes:",
        "/api/videos/{video_id}/comments:",
    ]:
        assert f"  {path}" in text


def test_the_schema_and_its_docs_page_are_served(anonymous):
    schema = anonymous.client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert {"post"} <= set(paths["/api/videos/{video_id}/likes"])
    assert {"get", "post"} <= set(paths["/api/videos/{video_id}/comments"])
    assert anonymous.client.get("/api/docs").status_code == 200


# -- the database not answering ---------------------------------------------------------------------


@pytest.mark.parametrize("error", ["locked", "pool"])
def test_a_database_that_does_not_answer_is_a_503_with_retry_after(api, video, monkeypatch, error):
    from django.db import OperationalError

    class PoolTimeout(Exception):  # what psycopg_pool raises when no connection frees up in time
        pass

    PoolTimeout.__module__ = "psycopg_pool.errors"
    failure = OperationalError("database is locked") if error == "locked" else PoolTimeout("couldn't get a connection")

    def stuck(*args: Any, **kwargs: Any) -> int:
        raise failure

    monkeypatch.setattr(services, "like_video", stuck)
    response = api.post(f"/api/videos/{video.pk}/likes")
    assert_error(response, 503, "database_unavailable")
    assert response["Retry-After"] == "5"
    assert LiveVideo.objects.get(pk=video.pk).like_count == 0
