"""Likes from concurrent requests are written in batches, and every liker still gets an exact, unique total."""

import threading
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

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


def test_where_update_returning_is_missing_the_orm_path_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("PostgreSQL always writes a batch in one statement")
    # SQLite before 3.35 (Django 5.2 supports 3.31) has no RETURNING: the batch goes through the ORM.
    monkeypatch.setattr(connection.features, "can_return_columns_from_insert", False)
    owner, fan = make_member("owner"), make_member("fan")
    live, ended = make_video(owner, "live"), make_video(owner, "over", ended=True)
    with CaptureQueriesContext(connection) as queries:
        outcomes = services._write_likes([(live.pk, fan.pk), (ended.pk, fan.pk), (999_999, fan.pk), (live.pk, fan.pk)])
    assert not any("RETURNING" in query["sql"] and query["sql"].startswith("UPDATE") for query in queries)
    assert (outcomes[0], outcomes[3]) == (1, 2)
    assert isinstance(outcomes[1], services.VideoNotLive)
    assert isinstance(outcomes[2], services.NoSuchVideo)
    assert Like.objects.filter(video=live).count() == LiveVideo.objects.get(pk=live.pk).like_count == 2
    assert Like.objects.filter(video=ended).count() == 0


def test_a_batch_locks_its_videos_in_id_order_before_it_changes_any() -> None:
    # Two workers' batches touching the same videos must lock them in one order, or PostgreSQL deadlocks
    # them (it did: bench/likes_api.py, 67 of 593 likes failed before this order). SQLite has no row locks:
    # BEGIN IMMEDIATE takes the database's one write lock first.
    owner = make_member("owner")
    first, second = make_video(owner, "first"), make_video(owner, "second")
    with CaptureQueriesContext(connection) as queries:
        services._write_likes([(second.pk, owner.pk), (first.pk, owner.pk), (second.pk, owner.pk)])
    statements = [query["sql"] for query in queries.captured_queries if "likes_livevideo" in query["sql"]]
    if connection.vendor == "postgresql":
        # One statement: the CTE that locks the videos' rows in id order comes before the one raising them.
        (statement,) = statements
        assert statement.index('ORDER BY "id" FOR NO KEY UPDATE') < statement.index('UPDATE "likes_livevideo"')
    else:
        assert "FOR UPDATE" not in " ".join(statements)
    assert LiveVideo.objects.get(pk=second.pk).like_count == 2


def test_a_batch_over_many_videos_costs_a_few_statements_not_a_few_per_video() -> None:
    owner = make_member("owner")
    videos = [make_video(owner, f"v{n}") for n in range(30)]
    fans = [make_member(f"fan{n}") for n in range(3)]
    # Video n gets 1 + n % 3 likes: three distinct increments.
    items = [(video.pk, fans[k].pk) for n, video in enumerate(videos) for k in range(1 + n % 3)]
    with CaptureQueriesContext(connection) as queries:
        outcomes = services._write_likes(items)
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    if connection.vendor == "postgresql":
        assert len(statements) == 1, statements  # lock, raise, insert and read back, in one round trip
    else:
        assert [sql.split()[0] for sql in statements if not sql.startswith(("BEGIN", "COMMIT"))] == ["UPDATE", "INSERT"]
    per_video: dict[int, list[Any]] = {}
    for (video_id, _member), outcome in zip(items, outcomes, strict=True):
        per_video.setdefault(video_id, []).append(outcome)
    assert all(counts == list(range(1, len(counts) + 1)) for counts in per_video.values())
    for n, video in enumerate(videos):
        video.refresh_from_db()
        assert video.like_count == Like.objects.filter(video=video).count() == 1 + n % 3


@pytest.fixture
def postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks between connections: PostgreSQL (SQLite has one write lock per database)")


def _in_thread(target: Any, errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # the test reads it
            errors.append(exc)
        finally:
            connection.close()  # the thread's own

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_for_a_lock_wait() -> None:
    """Until some backend of this database waits for a lock (bounded: 5 s); PostgreSQL signals nothing."""
    for _ in range(500):
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
        threading.Event().wait(0.01)
    raise AssertionError("no batch ever waited for the video's row")


def test_a_video_that_ends_while_a_batch_waits_for_its_row_refuses_that_batch_s_likes(postgresql: None) -> None:
    owner, fan = make_member("owner"), make_member("fan")
    hot, other = make_video(owner, "hot"), make_video(owner, "other")
    holding, finish = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    outcomes: list[Any] = []

    def end_and_hold() -> None:
        with transaction.atomic():
            LiveVideo.objects.filter(pk=hot.pk).update(status=LiveVideo.Status.ENDED, ended_at=timezone.now())
            holding.set()
            assert finish.wait(10)

    ender = _in_thread(end_and_hold, errors)
    assert holding.wait(10), errors
    # The batch read the video as live before it ended; only the status under the row's lock counts.
    liker = _in_thread(lambda: outcomes.extend(services._write_likes([(other.pk, fan.pk), (hot.pk, fan.pk)])), errors)
    _wait_for_a_lock_wait()
    finish.set()
    for thread in (ender, liker):
        thread.join(10)
    assert errors == []
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], services.VideoNotLive)
    assert Like.objects.filter(video=hot).count() == LiveVideo.objects.get(pk=hot.pk).like_count == 0
    assert Like.objects.filter(video=other).count() == LiveVideo.objects.get(pk=other.pk).like_count == 1


def test_two_connections_writing_batches_over_the_same_videos_get_every_total_once(postgresql: None) -> None:
    owner, fans = make_member("owner"), [make_member(f"fan{n}") for n in range(2)]
    videos = [make_video(owner, f"v{n}") for n in range(6)]
    rounds, errors = 25, list[BaseException]()
    answered: dict[int, list[Any]] = {video.pk: [] for video in videos}
    start = threading.Barrier(2)

    def write(order: list[LiveVideo], fan: Any) -> None:
        start.wait(10)
        for _ in range(rounds):
            items = [(video.pk, fan.pk) for video in order for _ in range(2)]
            for (video_id, _fan), outcome in zip(items, services._write_likes(items), strict=True):
                answered[video_id].append(outcome)

    threads = [
        _in_thread(lambda: write(videos, fans[0]), errors),
        _in_thread(lambda: write(videos[::-1], fans[1]), errors),
    ]
    for thread in threads:
        thread.join(30)
    assert errors == []
    for video in videos:
        assert sorted(answered[video.pk]) == list(range(1, 2 * 2 * rounds + 1))
        assert Like.objects.filter(video=video).count() == LiveVideo.objects.get(pk=video.pk).like_count == 100
