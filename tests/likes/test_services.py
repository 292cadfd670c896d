"""Services: what each action stores, and the exact topic, type and payload it publishes after commit."""

import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from likes import services
from likes.models import Comment, Like, LiveVideo
from tests.likes.conftest import WINDOW_SECS
from tests.likes.factories import make_comment, make_member, make_video

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def roll_back(action: Callable[[], object]) -> None:
    """Run `action` in a transaction that then fails and rolls back."""

    def fail_after() -> None:
        with transaction.atomic():
            action()
            raise Boom

    with pytest.raises(Boom):
        fail_after()


def comment_json(comment: Comment, *, hidden: bool = False) -> dict:
    member = comment.member
    return {
        "id": comment.pk,
        "video": comment.video_id,
        "member": {"id": member.pk, "name": member.get_full_name() or member.username},
        "text": comment.text,
        "created": comment.created.isoformat().replace("+00:00", "Z"),
        "hidden": hidden,
    }


# -- likes ----------------------------------------------------------------------------------------


def test_a_like_is_stored_counted_and_announced_after_the_window(
    video, alice, published, scheduler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, alice) == 1
    assert Like.objects.filter(video=video, member=alice).count() == 1
    assert published == []  # coalesced: nothing before the window ends
    scheduler.advance(WINDOW_SECS)
    [event] = published
    assert (event.topic, event.type) == (f"video.{video.pk}.likes", "like.created")
    assert event.data == {"video": video.pk, "count": 1, "covered": 1, "by": [{"id": alice.pk, "name": "Alice"}]}


def test_likes_in_one_window_make_one_event_naming_distinct_recent_likers(
    video, alice, bob, published, scheduler, django_capture_on_commit_callbacks
):
    for member in [alice, bob, alice]:
        with django_capture_on_commit_callbacks(execute=True):
            services.like_video(video, member)
    scheduler.advance(WINDOW_SECS)
    [event] = published
    assert event.data == {
        "video": video.pk,
        "count": 3,
        "covered": 3,
        "by": [{"id": alice.pk, "name": "Alice"}, {"id": bob.pk, "name": "bob"}],
    }


def test_the_likers_list_is_bounded(video, published, scheduler, django_capture_on_commit_callbacks):
    members = [make_member(f"m{n}") for n in range(services.LIKERS_PER_EVENT + 3)]
    for member in members:
        with django_capture_on_commit_callbacks(execute=True):
            services.like_video(video, member)
    scheduler.advance(WINDOW_SECS)
    [event] = published
    assert event.data["covered"] == len(members)
    assert [liker["name"] for liker in event.data["by"]] == [m.username for m in reversed(members)][
        : services.LIKERS_PER_EVENT
    ]


def test_a_burst_of_1000_likes_makes_few_events_whose_covered_add_up_exactly(
    video, alice, bob, published, scheduler, clock, django_capture_on_commit_callbacks
):
    burst_secs = 1.0
    for n in range(1000):
        with django_capture_on_commit_callbacks(execute=True):
            services.like_video(video, alice if n % 2 else bob)
        scheduler.advance(burst_secs / 1000)
    scheduler.run_all()
    events = published.of_type("like.created")
    assert len(events) <= math.ceil(burst_secs / WINDOW_SECS) + 1
    assert sum(event.data["covered"] for event in events) == 1000
    assert events[-1].data["count"] == 1000 == LiveVideo.objects.get(pk=video.pk).like_count
    counts = [event.data["count"] for event in events]
    assert counts == sorted(set(counts))
    assert all(b.at - a.at >= WINDOW_SECS for a, b in itertools.pairwise(events))


def test_a_rolled_back_like_is_neither_counted_nor_announced(
    video, alice, published, scheduler, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        roll_back(lambda: services.like_video(video, alice))
    scheduler.run_all()
    assert callbacks == []
    assert published == []
    assert Like.objects.count() == 0
    assert LiveVideo.objects.get(pk=video.pk).like_count == 0


def test_an_ended_video_takes_no_like(ended_video, alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.VideoNotLive):
        services.like_video(ended_video, alice)
    assert Like.objects.count() == 0
    assert LiveVideo.objects.get(pk=ended_video.pk).like_count == 0
    assert published == []


def test_saving_a_stale_video_keeps_the_like_count(video, alice, django_capture_on_commit_callbacks):
    stale = LiveVideo.objects.get(pk=video.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.like_video(video, alice)
    stale.title = "Renamed"
    stale.save()
    fresh = LiveVideo.objects.get(pk=video.pk)
    assert (fresh.title, fresh.like_count) == ("Renamed", 1)


def test_a_failing_announcement_does_not_undo_the_like(
    video, alice, coalescer, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    def unreachable(video_ids: Any) -> list[int]:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(coalescer, "likes_committed", unreachable)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, alice) == 1
    assert LiveVideo.objects.get(pk=video.pk).like_count == 1
    assert "redis is down" in caplog.text


def test_likes_stored_while_redis_is_down_are_announced_once_it_answers(
    video, alice, bob, coalescer, scheduler, published, django_capture_on_commit_callbacks, monkeypatch
):
    from redis.exceptions import ConnectionError as RedisConnectionError

    down = True
    real_acquire = coalescer.store.acquire

    def acquire(key: str, token: str, ttl_secs: float) -> bool:
        if down:
            raise RedisConnectionError("Connection refused")
        return real_acquire(key, token, ttl_secs)

    monkeypatch.setattr(coalescer.store, "acquire", acquire)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, alice) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, bob) == 2
    scheduler.advance(services.UNANNOUNCED_RETRY_SECS * 3)  # still down: retried, nothing announced
    assert published.of_type(services.LIKE_CREATED) == []
    down = False
    scheduler.advance(services.UNANNOUNCED_RETRY_SECS)  # the retry opens a window...
    scheduler.advance(WINDOW_SECS)  # ...whose flush announces the exact total
    [event] = published.of_type(services.LIKE_CREATED)
    assert event.data["count"] == 2
    assert event.data["covered"] == 2
    assert services._unannounced == set()


# -- comments -------------------------------------------------------------------------------------


def test_a_comment_is_stored_and_announced_with_its_json(video, alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        comment = services.post_comment(video, alice, "  Great talk!  ")
    assert comment.text == "Great talk!"
    [event] = published
    assert (event.topic, event.type) == (f"video.{video.pk}.comments", "comment.created")
    assert event.data == comment_json(comment)


def test_a_rolled_back_comment_is_not_announced(video, alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        roll_back(lambda: services.post_comment(video, alice, "never seen"))
    assert published == []
    assert Comment.objects.count() == 0


@pytest.mark.parametrize("text", ["", "   ", "x" * 1001, "nul\x00byte", None, 5])
def test_a_bad_comment_is_refused(video, alice, published, text, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.InvalidComment):
        services.post_comment(video, alice, text)
    assert Comment.objects.count() == 0
    assert published == []


def test_a_comment_of_exactly_1000_characters_is_taken(video, alice, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert len(services.post_comment(video, alice, "x" * 1000).text) == 1000


def test_an_ended_video_takes_no_comment(ended_video, alice, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(services.VideoNotLive):
        services.post_comment(ended_video, alice, "too late")
    assert published == []


def test_hiding_announces_only_the_id_and_unhiding_the_whole_comment(
    video, alice, bob, published, django_capture_on_commit_callbacks
):
    first, second = make_comment(video, alice, "spam"), make_comment(video, bob, "fine")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.set_comment_hidden(Comment.objects.filter(pk=first.pk), True) == 1
    assert [(e.topic, e.type, e.data) for e in published] == [
        (f"video.{video.pk}.comments", "comment.hidden", {"id": first.pk, "video": video.pk})
    ]
    assert Comment.objects.get(pk=first.pk).hidden
    assert not Comment.objects.get(pk=second.pk).hidden
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.set_comment_hidden([first, second], False) == 1  # only the hidden one changes
    assert [(e.topic, e.type, e.data) for e in published] == [
        (f"video.{video.pk}.comments", "comment.unhidden", comment_json(Comment.objects.get(pk=first.pk)))
    ]


def test_hiding_an_already_hidden_comment_announces_nothing(
    video, alice, published, django_capture_on_commit_callbacks
):
    comment = make_comment(video, alice, hidden=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.set_comment_hidden([comment], True) == 0
    assert published == []


def test_a_rolled_back_hide_is_not_announced(video, alice, published, django_capture_on_commit_callbacks):
    comment = make_comment(video, alice)
    with django_capture_on_commit_callbacks(execute=True):
        roll_back(lambda: services.set_comment_hidden([comment], True))
    assert published == []
    assert not Comment.objects.get(pk=comment.pk).hidden


def test_deleting_visible_comments_removes_them_from_pages(video, alice, published, django_capture_on_commit_callbacks):
    visible, hidden = make_comment(video, alice), make_comment(video, alice, hidden=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.delete_comments(Comment.objects.all()) == 2
    assert Comment.objects.count() == 0
    assert [(e.type, e.data) for e in published] == [("comment.hidden", {"id": visible.pk, "video": video.pk})]
    assert hidden.pk not in [e.data["id"] for e in published]


# -- videos ---------------------------------------------------------------------------------------


def test_ending_videos_closes_them_and_tells_open_pages_after_commit(
    video, alice, published, django_capture_on_commit_callbacks
):
    other = make_video(alice, "other")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert services.end_videos([video]) == 1
    assert published == []  # not before the commit
    for callback in callbacks:
        callback()
    video.refresh_from_db()
    other.refresh_from_db()
    assert video.status == LiveVideo.Status.ENDED
    assert video.ended_at is not None
    assert other.is_live
    ended = {"video": video.pk, "ended_at": video.ended_at.isoformat()}
    assert [(e.topic, e.type, e.data) for e in published] == [(f"video.{video.pk}.likes", "video.ended", ended)]
    assert [(e.topic, e.type, e.data) for e in published.all_videos] == [("videos.likes", "video.ended", ended)]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.end_videos([video]) == 0  # already ended: nothing announced again
    assert len(published) == 1


def test_each_event_names_its_own_videos_recent_likers_among_the_likes_it_covers(
    video, alice, bob, published, scheduler, django_capture_on_commit_callbacks
):
    other = make_video(video.owner, "other")
    members = [make_member(f"m{n}") for n in range(3)]
    likes = [(video, alice), (other, members[0]), (video, bob), (other, members[1]), (other, members[2])]
    with django_capture_on_commit_callbacks(execute=True):
        services._write_likes([(liked.pk, member.pk) for liked, member in likes])
    # One like more on `other` by m0, in a window of its own: its event names only the likers it covers.
    scheduler.advance(WINDOW_SECS)
    with django_capture_on_commit_callbacks(execute=True):
        services._write_likes([(other.pk, members[0].pk)])
    scheduler.advance(WINDOW_SECS)
    by_video = {(event.data["video"], event.data["count"]): event.data for event in published}
    assert by_video[(video.pk, 2)]["by"] == [{"id": bob.pk, "name": "bob"}, {"id": alice.pk, "name": "Alice"}]
    assert [liker["name"] for liker in by_video[(other.pk, 3)]["by"]] == ["m2", "m1", "m0"]
    assert by_video[(other.pk, 4)]["by"] == [{"id": members[0].pk, "name": "m0"}]
    assert by_video[(other.pk, 4)]["covered"] == 1
    # The home page's topic carries each total as well, and nothing else about the likes.
    totals = [(event.topic, event.type, event.data) for event in published.all_videos]
    expected = [
        ("videos.likes", "like.total", {"video": event.data["video"], "count": event.data["count"]})
        for event in published
    ]
    assert sorted(totals, key=str) == sorted(expected, key=str)


def test_with_a_flusher_thread_the_writer_hands_its_videos_over_and_the_flusher_opens_their_windows(
    video, alice, bob, published, scheduler, clock, django_capture_on_commit_callbacks
):
    from likes.coalesce import MemoryStore

    started: list = []  # what the site runs in its flusher thread, run here when the test says
    coalescer = services.new_coalescer(store=MemoryStore(clock), schedule=scheduler, window_secs=WINDOW_SECS)
    coalescer.run_flush = started.append
    services.set_coalescer(coalescer)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, alice) == 1
    assert coalescer.holds() == 0  # handed over: the writer did not ask the store
    started.pop()()
    assert coalescer.holds() == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert services.like_video(video, bob) == 2
    assert started == []  # the window is open: nothing to ask
    scheduler.advance(WINDOW_SECS)
    started.pop()()
    [event] = published.of_type(services.LIKE_CREATED)
    assert (event.data["count"], event.data["covered"]) == (2, 2)
    assert [liker["id"] for liker in event.data["by"]] == [bob.pk, alice.pk]


def test_the_writer_keeps_its_connection_while_likes_flow_and_the_flusher_has_it_closed_when_they_stop(
    video, alice, scheduler, clock, django_capture_on_commit_callbacks, monkeypatch
):
    from likes.coalesce import MemoryStore

    started: list = []
    coalescer = services.new_coalescer(store=MemoryStore(clock), schedule=scheduler, window_secs=WINDOW_SECS)
    coalescer.run_flush = started.append
    services.set_coalescer(coalescer)
    asked_to_close: list = []
    monkeypatch.setattr(services._WRITER, "submit", asked_to_close.append)
    assert not services._likes_flowing()
    with django_capture_on_commit_callbacks(execute=True):
        services.like_video(video, alice)
    started.pop()()  # the flusher opens the window
    assert services._likes_flowing()
    assert services._flusher_keeps_connection()
    assert asked_to_close == []
    scheduler.advance(WINDOW_SECS)
    started.pop()()  # the window's flush: no window is held any more
    assert not services._flusher_keeps_connection()
    assert asked_to_close == [services._close_idle_writer_connection]
