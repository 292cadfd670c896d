"""The admin: counts without a query per row, and moderation that goes through the services."""

import pytest
from django.urls import reverse

from likes.models import Comment, LiveVideo
from tests.likes.factories import make_comment, make_member, make_video

pytestmark = pytest.mark.django_db


def test_the_video_list_shows_counts_in_a_fixed_number_of_queries(
    admin_client, alice, bob, django_assert_max_num_queries
):
    url = reverse("admin:likes_livevideo_changelist")
    first = make_video(alice, "first")
    make_comment(first, bob)
    make_comment(first, bob, hidden=True)
    admin_client.get(url)  # warm the session and content types
    with django_assert_max_num_queries(12) as few:
        response = admin_client.get(url)
    for n in range(10):
        video = make_video(alice, f"more-{n}")
        make_comment(video, bob)
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = admin_client.get(url)
    assert response.status_code == 200
    row = next(r for r in response.context["cl"].result_list if r.pk == first.pk)
    assert (row.comment_total, row.hidden_total) == (2, 1)


def test_the_hide_action_hides_and_announces(admin_client, video, alice, published, django_capture_on_commit_callbacks):
    spam, fine = make_comment(video, alice, "spam"), make_comment(video, alice, "fine")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:likes_comment_changelist"), {"action": "hide", "_selected_action": [spam.pk]}, follow=True
        )
    assert response.status_code == 200
    assert "1 comment(s) hidden." in response.content.decode()
    assert Comment.objects.get(pk=spam.pk).hidden
    assert not Comment.objects.get(pk=fine.pk).hidden
    assert [(e.type, e.data) for e in published] == [("comment.hidden", {"id": spam.pk, "video": video.pk})]


def test_the_unhide_action_brings_comments_back(
    admin_client, video, alice, published, django_capture_on_commit_callbacks
):
    hidden = make_comment(video, alice, "reconsidered", hidden=True)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:likes_comment_changelist"), {"action": "unhide", "_selected_action": [hidden.pk]}
        )
    assert not Comment.objects.get(pk=hidden.pk).hidden
    assert [(e.type, e.data["id"], e.data["text"]) for e in published] == [
        ("comment.unhidden", hidden.pk, "reconsidered")
    ]


def test_deleting_a_comment_in_the_admin_announces_it(
    admin_client, video, alice, published, django_capture_on_commit_callbacks
):
    comment = make_comment(video, alice)
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:likes_comment_delete", args=[comment.pk]), {"post": "yes"})
    assert not Comment.objects.exists()
    assert [(e.type, e.data) for e in published] == [("comment.hidden", {"id": comment.pk, "video": video.pk})]


def test_comments_are_read_only_in_the_admin(admin_client, video, alice):
    comment = make_comment(video, alice, "original")
    admin_client.post(reverse("admin:likes_comment_change", args=[comment.pk]), {"text": "edited", "hidden": "on"})
    comment.refresh_from_db()
    assert (comment.text, comment.hidden) == ("original", False)
    assert admin_client.get(reverse("admin:likes_comment_add")).status_code == 403


def test_comment_search_and_filters_work(admin_client, video, alice):
    make_comment(video, alice, "needle in a haystack")
    make_comment(video, make_member("zed"), "other", hidden=True)
    url = reverse("admin:likes_comment_changelist")
    assert [c.text for c in admin_client.get(url, {"q": "needle"}).context["cl"].result_list] == [
        "needle in a haystack"
    ]
    assert [c.text for c in admin_client.get(url, {"visibility": "hidden"}).context["cl"].result_list] == ["other"]
    assert [c.text for c in admin_client.get(url, {"q": "zed"}).context["cl"].result_list] == ["other"]


def test_the_end_now_action_ends_live_videos(admin_client, video):
    admin_client.post(
        reverse("admin:likes_livevideo_changelist"), {"action": "end_now", "_selected_action": [video.pk]}
    )
    assert LiveVideo.objects.get(pk=video.pk).status == LiveVideo.Status.ENDED


def test_ending_a_video_in_its_form_without_an_end_time_is_a_form_error(admin_client, video, alice):
    response = admin_client.post(
        reverse("admin:likes_livevideo_change", args=[video.pk]),
        {
            "title": video.title,
            "slug": video.slug,
            "owner": alice.pk,
            "status": "ended",
            "started_at_0": "2026-01-01",
            "started_at_1": "10:00:00",
            "ended_at_0": "",
            "ended_at_1": "",
            "description": "",
        },
    )
    assert response.status_code == 200  # the form again, with the error, not a 500
    assert "an ended video needs its end time" in response.content.decode()
    assert LiveVideo.objects.get(pk=video.pk).is_live
