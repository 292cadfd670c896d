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


def test_a_batch_locks_its_videos_in_id_order() -> None:
    # Two workers' batches touching the same videos must lock them in one order, or PostgreSQL deadlocks
    # them (it did: bench/likes_api.py, 67 of 593 likes failed before this order).
    owner = make_member("owner")
    first, second = make_video(owner, "first"), make_video(owner, "second")
    with CaptureQueriesContext(connection) as queries:
        services._write_likes([(second.pk, owner.pk), (first.pk, owner.pk), (second.pk, owner.pk)])
    updated = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("UPDATE")]
    locked = [int(re.search(r'"id" = (\d+)', sql).group(1)) for sql in updated]
    assert locked == [first.pk, second.pk]
