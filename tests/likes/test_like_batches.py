"""Likes from concurrent requests are written in batches, and every liker still gets an exact, unique total."""

import re
import threading
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from likes import services
from likes.models import Like, LiveVideo
from tests.likes.conftest import wait_until_queued
from tests.likes.factories import make_member, make_video

pytestmark = pytest.mark.django_db(transaction=True)

LIKERS = 12


def _like_in_threads(video: LiveVideo, members: list[Any], results: list[Any]) -> list[threading.Thread]:
    def run(member: Any) -> None:
        try:
            results.append(services.like_video(LiveVideo.objects.get(pk=video.pk), member))
        except Exception as exc:  # the test reads it
            results.append(exc)
        finally:
            connection.close()  # each thread opened its own

    threads = [threading.Thread(target=run, args=(member,)) for member in members]
    for thread in threads:
        thread.start()
    return threads


def test_concurrent_likes_share_transactions_and_get_every_total_once(monkeypatch: pytest.MonkeyPatch) -> None:
    owner = make_member("owner")
    video = make_video(owner, "hot")
    members = [make_member(f"fan{n}") for n in range(LIKERS)]
    first_batch_open = threading.Event()
    release = threading.Event()
    write = services._likes.write

    def held_write(items: Any) -> Any:
        # The first batch waits until everybody else queued behind it: they must then share one batch.
        if not first_batch_open.is_set():
            first_batch_open.set()
            release.wait(10)
        return write(items)

    monkeypatch.setattr(services._likes, "write", held_write)
    batches_before = services._likes.stats["batches"]
    results: list[Any] = []
    threads = _like_in_threads(video, members[:1], results)
    assert first_batch_open.wait(10)
    threads += _like_in_threads(video, members[1:], results)
    wait_until_queued(services._likes, LIKERS - 1)
    release.set()
    for thread in threads:
        thread.join(10)
    assert sorted(results) == list(range(1, LIKERS + 1))
    assert services._likes.stats["batches"] - batches_before == 2
    assert LiveVideo.objects.get(pk=video.pk).like_count == LIKERS
    assert Like.objects.filter(video=video).count() == LIKERS


def test_an_ended_or_unknown_video_refuses_every_like_of_a_batch_and_the_others_go_in() -> None:
    owner = make_member("owner")
    live, ended = make_video(owner, "live"), make_video(owner, "over", ended=True)
    fan = make_member("fan")
    outcomes = services._write_likes([(live.pk, fan.pk), (ended.pk, fan.pk), (live.pk, owner.pk), (999_999, fan.pk)])
    assert (outcomes[0], outcomes[2]) == (1, 2)
    assert isinstance(outcomes[1], services.VideoNotLive)
    assert isinstance(outcomes[3], services.NoSuchVideo)
    assert Like.objects.filter(video=ended).count() == 0
    assert LiveVideo.objects.get(pk=live.pk).like_count == 2


def test_a_batch_locks_its_videos_in_id_order_before_it_changes_any() -> None:
    # Two workers' batches touching the same videos must lock them in one order, or PostgreSQL deadlocks
    # them (it did: bench/likes_api.py, 67 of 593 likes failed before this order).
    owner = make_member("owner")
    first, second = make_video(owner, "first"), make_video(owner, "second")
    with CaptureQueriesContext(connection) as queries:
        services._write_likes([(second.pk, owner.pk), (first.pk, owner.pk), (second.pk, owner.pk)])
    statements = [query["sql"] for query in queries.captured_queries if "likes_livevideo" in query["sql"]]
    lock = statements[0]
    assert lock.startswith("SELECT")
    # Ordered by the id, the first selected column ("pk"), whichever way the backend spells it.
    assert re.search(r'ORDER BY (1|"likes_livevideo"\."id") ASC', lock), lock
    assert ("FOR UPDATE" in lock) == connection.features.has_select_for_update
    assert any(sql.startswith("UPDATE") for sql in statements[1:])


def test_a_batch_over_many_videos_costs_a_few_statements_not_a_few_per_video() -> None:
    owner = make_member("owner")
    videos = [make_video(owner, f"v{n}") for n in range(30)]
    fans = [make_member(f"fan{n}") for n in range(3)]
    # Video n gets 1 + n % 3 likes: three distinct increments, so three UPDATEs.
    items = [(video.pk, fans[k].pk) for n, video in enumerate(videos) for k in range(1 + n % 3)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = services._write_likes(items)
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    assert len([sql for sql in statements if sql.startswith("UPDATE")]) == 3
    assert len([sql for sql in statements if sql.startswith("INSERT")]) == 1
    assert len(statements) <= 8, statements  # BEGIN/COMMIT, lock, 3 UPDATEs, totals, INSERT
    per_video: dict[int, list[int]] = {}
    for (video_id, _member), outcome in zip(items, outcomes, strict=True):
        per_video.setdefault(video_id, []).append(outcome)
    assert all(counts == list(range(1, len(counts) + 1)) for counts in per_video.values())
    for n, video in enumerate(videos):
        video.refresh_from_db()
        assert video.like_count == Like.objects.filter(video=video).count() == 1 + n % 3
