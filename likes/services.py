"""The only writer of videos, likes and comments, and the only emitter of their events (after commit).

Events, each published through realtime.publish after the transaction that stored the change commits:
- `like.created` on `video.{id}.likes`: {"video", "count": exact total, "covered": likes since the previous
  like event, "by": up to LIKERS_PER_EVENT recent likers [{"id", "name"}]}; coalesced (likes.coalesce).
- `comment.created` and `comment.unhidden` on `video.{id}.comments`: the comment as the API shows it.
- `comment.hidden` on `video.{id}.comments`: {"id", "video"} only; a moderated text is not sent out again.
- `video.ended` on `video.{id}.likes`: {"video", "ended_at"} when an admin ends a live video.
- On `videos.likes`, for the home page's cards: `like.total` {"video", "count"} with each `like.created`, and
  `video.ended` with each one above.
"""

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError

from likes import coalesce, conf, db, timers
from likes.async_group_commit import AsyncGroupCommit
from likes.group_commit import GroupCommit
from likes.models import MAX_COMMENT_LENGTH, Comment, Like, LiveVideo, display_name
from likes.serializers import CommentSerializer
from realtime import stores, topics
from realtime.publishing import publish, publish_many

logger = logging.getLogger(__name__)

LIKE_CREATED = "like.created"
COMMENT_CREATED = "comment.created"
COMMENT_HIDDEN = "comment.hidden"
COMMENT_UNHIDDEN = "comment.unhidden"
VIDEO_ENDED = "video.ended"
LIKE_TOTAL = "like.total"
# Every live video's like total and end, on one topic the home page's cards follow. Not video.{id}.likes: the
# census counts that topic's subscribers as the video's viewers, and a visitor of the home page watches none.
ALL_VIDEOS_TOPIC = "videos.likes"
LIKERS_PER_EVENT = 5
# How many of the newest likes are scanned for distinct likers' names.
LIKERS_SCAN = 50


class VideoNotLive(Exception):
    """The video has ended: it takes no more likes or comments."""


class NoSuchVideo(LookupError):
    """No video has this id (a like found out while writing its batch)."""


class InvalidComment(ValueError):
    """A comment text that cannot be stored; the message says why."""


# -- likes ----------------------------------------------------------------------------------------


def like_video(video: LiveVideo, member: User) -> int:
    """Sync: store one like of a live `video` by `member`; return the video's exact like total including it.

    Raises VideoNotLive. After commit, the like is announced by a coalesced `like.created` event. Outside a
    transaction, concurrent likes of this process are written together (likes.group_commit): one
    transaction per batch, each caller returning once its like is committed. Inside the caller's own
    transaction the like is written there, alone, so it commits or rolls back with it.
    """
    if transaction.get_connection().in_atomic_block:
        outcome = _write_likes([(video.pk, member.pk)])[0]
    else:
        outcome = _likes.submit((video.pk, member.pk))
    if isinstance(outcome, BaseException):
        raise outcome
    video.like_count = outcome
    return outcome


async def alike_video(video_id: int, member_id: int) -> int:
    """Async: store one like of video `video_id` by member `member_id`; return the video's exact total with it.

    Raises NoSuchVideo or VideoNotLive. Concurrent likes of this process (any video) are written together
    (likes.async_group_commit): one transaction per batch, through `_write_like_batch` in the likes writer
    thread; the caller returns once its own like is committed. Announced after commit as like_video does.
    """
    return int(await _alikes.asubmit((video_id, member_id)))


def _write_likes(items: Sequence[tuple[int, int]]) -> list[int | VideoNotLive | NoSuchVideo]:
    """Store a batch of likes, (video id, member id) each, in one transaction; per like, the video's total
    including it (in batch order), VideoNotLive or NoSuchVideo.

    A few statements per batch whatever number of videos it spans (it was three per video: with 100 videos liked
    at once, a batch cost as many round trips as it had likes). A video's counter is what every like of a hot
    video queues on, so it is taken last and held as briefly as the backend allows (see each `_store_likes_*`).
    The video's status is read under that lock: a video that ends meanwhile refuses the batch's likes of it."""
    per_video: dict[int, list[int]] = {}
    for index, (video_id, _member) in enumerate(items):
        per_video.setdefault(video_id, []).append(index)
    if connection.vendor == "postgresql":
        # One statement: in autocommit (the likes writer) it is its own transaction, and within a caller's
        # atomic block it is part of that one; either way the announcement waits for the commit.
        totals, found = _store_likes_in_one_statement(items)
        # robust: the likes are stored whatever happens next; a failure to announce is logged, not raised.
        if totals:
            transaction.on_commit(_announcer(sorted(totals)), robust=True)
    else:
        store = _store_likes_returning if connection.features.can_return_columns_from_insert else _store_likes_orm
        with transaction.atomic():
            totals, found = store(items, per_video)
            if totals:
                transaction.on_commit(_announcer(sorted(totals)), robust=True)
    outcomes: list[int | VideoNotLive | NoSuchVideo] = [0] * len(items)
    for video_id, indexes in per_video.items():
        if video_id in totals:
            first = totals[video_id] - len(indexes) + 1
            for offset, index in enumerate(indexes):
                outcomes[index] = first + offset
            continue
        # Told apart only when refused (rare): an ended video is a 409, an unknown id a 404.
        refusal = VideoNotLive(f"video {video_id} has ended") if video_id in found else NoSuchVideo(video_id)
        for index in indexes:
            outcomes[index] = refusal
    return outcomes


def _store_likes_in_one_statement(items: Sequence[tuple[int, int]]) -> tuple[dict[int, int], set[int]]:
    """PostgreSQL: the batch in one statement, one round trip; ({live video: total after the batch}, {every
    video of the batch that exists}).

    The videos' rows are locked in id order (two workers' batches sharing videos then queue instead of
    deadlocking), raised, and the likes inserted, all inside the server: the hot video's row lock is held for
    the statement and its commit, not across round trips to a Python thread that has to win the GIL back from
    a busy event loop between statements (27 % of the writer's samples waited on that lock with
    SELECT ... FOR UPDATE, UPDATE, SELECT, INSERT, COMMIT: docs/benchmarks.md A.14). The status is re-read
    on the row's newest version under the lock (READ COMMITTED), so a video that ended meanwhile is left out."""
    videos, likes = (connection.ops.quote_name(model._meta.db_table) for model in (LiveVideo, Like))
    pk, status, count = _columns(LiveVideo, "id", "status", "like_count")
    liked, member, created = _columns(Like, "video", "member", "created")
    sql = (
        "WITH batch AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[]) "  # noqa: S608 (names from the models)
        "WITH ORDINALITY AS b(video, member, seq)), "
        "added AS (SELECT video, count(*) AS n FROM batch GROUP BY video), "
        f"locked AS (SELECT {pk} AS video FROM {videos} WHERE {pk} IN (SELECT video FROM added) AND {status} = %s "
        f"ORDER BY {pk} FOR NO KEY UPDATE), "
        f"raised AS (UPDATE {videos} AS v SET {count} = v.{count} + added.n FROM added JOIN locked USING (video) "
        f"WHERE v.{pk} = added.video RETURNING v.{pk} AS video, v.{count} AS total), "
        f"stored AS (INSERT INTO {likes} ({liked}, {member}, {created}) SELECT batch.video, batch.member, %s "
        "FROM batch JOIN raised USING (video) ORDER BY batch.seq) "
        f"SELECT v.{pk}, raised.total FROM {videos} AS v LEFT JOIN raised ON raised.video = v.{pk} "
        f"WHERE v.{pk} IN (SELECT video FROM added)"
    )
    params: list[Any] = [[v for v, _m in items], [m for _v, m in items], LiveVideo.Status.LIVE, timezone.now()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return {video_id: total for video_id, total in rows if total is not None}, {video_id for video_id, _ in rows}


def _store_likes_returning(
    items: Sequence[tuple[int, int]], per_video: dict[int, list[int]]
) -> tuple[dict[int, int], set[int]]:
    """SQLite (3.35+), in the caller's transaction: one UPDATE ... RETURNING for every video's counter, one
    INSERT; as `_store_likes_in_one_statement` returns. BEGIN IMMEDIATE already holds the database's one write
    lock (there are no row locks), so what counts is how few statements run while it is held."""
    videos = connection.ops.quote_name(LiveVideo._meta.db_table)
    pk, status, count = _columns(LiveVideo, "id", "status", "like_count")
    ids = sorted(per_video)
    cases = " ".join(["WHEN %s THEN %s"] * len(ids))
    marks = ", ".join(["%s"] * len(ids))
    sql = (
        f"UPDATE {videos} SET {count} = {count} + CASE {pk} {cases} END "  # noqa: S608 (names and %s only)
        f"WHERE {pk} IN ({marks}) AND {status} = %s RETURNING {pk}, {count}"
    )
    params = [value for video_id in ids for value in (video_id, len(per_video[video_id]))]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *ids, LiveVideo.Status.LIVE])
        totals = dict(cursor.fetchall())
    if totals:
        Like.objects.bulk_create(
            [Like(video_id=video_id, member_id=member_id) for video_id, member_id in items if video_id in totals]
        )
    refused = [video_id for video_id in ids if video_id not in totals]
    found = set(LiveVideo.objects.filter(pk__in=refused).values_list("pk", flat=True)) if refused else set()
    return totals, found | set(totals)


def _columns(model: type[models.Model], *names: str) -> list[str]:
    """The quoted column names of `model`'s fields `names`, for the statements written out here."""
    fields = [model._meta.get_field(name) for name in names]
    return [connection.ops.quote_name(str(field.column)) for field in fields if isinstance(field, models.Field)]


def _store_likes_orm(
    items: Sequence[tuple[int, int]], per_video: dict[int, list[int]]
) -> tuple[dict[int, int], set[int]]:
    """Any other backend, in the caller's transaction: lock, raise, read, insert through the ORM; as
    `_store_likes_in_one_statement` returns."""
    # Locked first, in id order: two workers' batches then queue on the rows they share instead of deadlocking.
    statuses = dict(
        LiveVideo.objects.select_for_update().filter(pk__in=list(per_video)).order_by("pk").values_list("pk", "status")
    )
    live = [video_id for video_id in sorted(per_video) if statuses.get(video_id) == LiveVideo.Status.LIVE]
    by_increment: dict[int, list[int]] = {}
    for video_id in live:
        by_increment.setdefault(len(per_video[video_id]), []).append(video_id)
    for increment, videos in sorted(by_increment.items()):
        LiveVideo.objects.filter(pk__in=videos).update(like_count=F("like_count") + increment)
    if not live:
        return {}, set(statuses)
    totals = dict(LiveVideo.objects.filter(pk__in=live).values_list("pk", "like_count"))
    Like.objects.bulk_create(
        [Like(video_id=video_id, member_id=member_id) for video_id, member_id in items if video_id in totals]
    )
    return totals, set(statuses)


def _write_like_batch(items: Sequence[tuple[int, int]]) -> list[int | VideoNotLive | NoSuchVideo]:
    """Sync, in the likes writer thread: one batch of async callers' likes (the async path's one database
    boundary). Outside any request, so it manages its connection itself (likes.db): kept for the next batch
    while likes are waiting or keep coming (windows held), else closed as CONN_MAX_AGE says."""
    db.begin()
    try:
        return _write_likes(items)
    finally:
        db.end(keep=_alikes.waiting > 0 or _likes_flowing())


def _likes_flowing() -> bool:
    # Windows held by this process mean a like in the last window: more are likely, keep the connection. Only
    # where the flusher thread runs (the site): it is what closes the writer's connection once they stop.
    coalescer = _coalescer
    return coalescer is not None and coalescer.run_flush is not None and coalescer.holds() > 0


def _flusher_keeps_connection() -> bool:
    """After a flush round, in the flusher thread: keep its connection while windows are held; once none is, ask
    the writer thread to close its own connection too (each thread can only close its own)."""
    if _likes_flowing():
        return True
    _WRITER.submit(_close_idle_writer_connection)
    return False


def _close_idle_writer_connection() -> None:
    if _alikes.waiting == 0 and not _likes_flowing():
        db.end(keep=False)


# One thread: one batch is in flight per process at a time anyway (AsyncGroupCommit), and a single thread keeps
# a single database connection warm instead of each of the default executor's threads opening its own.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likes-writer")
_awrite_like_batch: Callable[[Sequence[tuple[int, int]]], Awaitable[list[Any]]] = sync_to_async(
    _write_like_batch, thread_sensitive=False, executor=_WRITER
)
# The coalescing flushes' thread: one flush at a time per process (likes.coalesce), on one warm connection.
_FLUSHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likes-flusher")


def _announcer(video_ids: list[int]) -> Callable[[], None]:
    # A named function, not a partial: Django logs a failed robust callback by its __qualname__.
    def announce_likes() -> None:
        _announce_likes(video_ids)

    return announce_likes


def _announce_likes(video_ids: Sequence[int]) -> None:
    coalescer = get_coalescer()
    if coalescer.run_flush is not None:
        # The flusher asks Redis for the windows in its next round (with its releases): the writer never waits.
        coalescer.likes_committed_soon(video_ids)
        return
    try:
        coalescer.likes_committed(video_ids)
    except (RedisError, OSError) as exc:
        _not_announced(list(video_ids), exc)


def _not_announced(video_ids: list[int], exc: Exception) -> None:
    # The likes are stored; only their announcement waits for Redis (the window locks live there).
    logger.warning("likes of videos %s stored but not announced yet (%r): retrying", video_ids[:10], exc)
    coalescer = get_coalescer()
    for video_id in video_ids:
        _defer_announcement(coalescer, video_id)


# Videos whose stored likes could not be announced (Redis unreachable), retried every
# UNANNOUNCED_RETRY_SECS until it answers: the announcement then carries the exact total, so a viewer's count
# catches up with every like stored meanwhile. Bounded: past MAX_UNANNOUNCED videos, the newest are dropped
# (counted in `stats`, logged) and their counts heal at their next like.
UNANNOUNCED_RETRY_SECS = 1.0
MAX_UNANNOUNCED = 10_000
stats = {"announcements_deferred": 0, "announcements_dropped": 0}
_unannounced: set[int] = set()
_retry_scheduled = False
_unannounced_lock = threading.Lock()


def _defer_announcement(coalescer: coalesce.Coalescer, video_id: int) -> None:
    global _retry_scheduled
    with _unannounced_lock:
        if video_id not in _unannounced and len(_unannounced) >= MAX_UNANNOUNCED:
            stats["announcements_dropped"] += 1
            logger.error("likes of video %s will be announced at its next like only: too many waiting", video_id)
            return
        _unannounced.add(video_id)
        stats["announcements_deferred"] += 1
        if _retry_scheduled:
            return
        _retry_scheduled = True
    coalescer.schedule(UNANNOUNCED_RETRY_SECS, partial(_start_retry, coalescer))


def _start_retry(coalescer: coalesce.Coalescer) -> None:
    # The scheduler may call this on the event loop: the retry talks to Redis, so it runs where flushes run.
    (coalescer.run_flush or _call)(_retry_announcements)


def _call(fn: Callable[[], None]) -> None:
    fn()


def _retry_announcements() -> None:
    global _retry_scheduled
    with _unannounced_lock:
        videos = sorted(_unannounced)
        _unannounced.clear()
        _retry_scheduled = False
    if videos:
        _announce_likes(videos)  # A failure defers them again.


_likes: GroupCommit[tuple[int, int]] = GroupCommit(_write_likes)
_alikes: AsyncGroupCommit[tuple[int, int]] = AsyncGroupCommit(_awrite_like_batch)


def figures() -> dict[str, float]:
    """This process's like counters, for the worker snapshot (realtime.hooks.add_stats)."""
    coalescing = {f"coalesce_{name}": value for name, value in _coalescer.stats.items()} if _coalescer else {}
    return {**_likes.stats, **_alikes.stats, **stats, **coalescing}


def _like_total(video_id: int) -> int | None:
    return LiveVideo.objects.filter(pk=video_id).values_list("like_count", flat=True).first()


def _like_totals(video_ids: Sequence[int]) -> dict[int, int]:
    return dict(LiveVideo.objects.filter(pk__in=list(video_ids)).values_list("pk", "like_count"))


def _recent_likers(video_id: int, covered: int) -> list[dict[str, Any]]:
    return _recent_likers_many({video_id: covered})[video_id]


def _recent_likers_many(covered: dict[int, int]) -> dict[int, list[dict[str, Any]]]:
    """Per video, up to LIKERS_PER_EVENT distinct members among its newest min(covered, LIKERS_SCAN) likes, newest
    first: one statement for every video of a flush, then one for the members' names.

    A flush announces up to one window per video of the process at once: per video a query building 50 Like and
    User instances cost 2-10 ms here (the flusher's largest share in the profile, docs/benchmarks.md). Each
    video's newest likes come from its own LIMITed subquery (the (video, -id) index), glued with UNION ALL:
    Django cannot express that on SQLite (no LIMIT inside a compound statement), so it is written out here, from
    the model's own table and column names."""
    found: dict[int, list[tuple[int, int]]] = {video_id: [] for video_id in covered}  # video -> [(id, member)]
    table = connection.ops.quote_name(Like._meta.db_table)
    columns = {field.name: connection.ops.quote_name(str(field.column)) for field in Like._meta.concrete_fields}
    videos = [video_id for video_id, count in covered.items() if count > 0]
    # SQLite allows at most 500 terms per compound statement.
    for start in range(0, len(videos), 200):
        chunk = videos[start : start + 200]
        select = (
            f"SELECT * FROM (SELECT {columns['id']}, {columns['video']}, {columns['member']} FROM {table} "  # noqa: S608
            f"WHERE {columns['video']} = %s ORDER BY {columns['id']} DESC LIMIT %s) AS newest{{n}}"
        )
        sql = " UNION ALL ".join(select.format(n=n) for n in range(len(chunk)))
        params = [value for video_id in chunk for value in (video_id, min(covered[video_id], LIKERS_SCAN))]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            for like_id, video_id, member_id in cursor.fetchall():
                if member_id is not None:
                    found[video_id].append((like_id, member_id))
    likers: dict[int, list[int]] = {}
    for video_id, likes in found.items():
        distinct: dict[int, None] = {}
        for _like_id, member_id in sorted(likes, reverse=True):
            distinct.setdefault(member_id)
            if len(distinct) == LIKERS_PER_EVENT:
                break
        likers[video_id] = list(distinct)
    wanted = {member_id for members in likers.values() for member_id in members}
    members = User.objects.only("id", "username", "first_name", "last_name").in_bulk(wanted) if wanted else {}
    return {
        video_id: [{"id": m, "name": display_name(members[m])} for m in member_ids if m in members]
        for video_id, member_ids in likers.items()
    }


def like_event_data(video_id: int, total: int, covered: int) -> dict[str, Any]:
    """The `like.created` payload announcing `covered` likes that brought the video to `total`."""
    return {"video": video_id, "count": total, "covered": covered, "by": _recent_likers(video_id, covered)}


def _emit_likes(video_id: int, total: int, covered: int) -> None:
    publish_many(
        [
            (topics.video_likes(video_id), LIKE_CREATED, like_event_data(video_id, total, covered)),
            (ALL_VIDEOS_TOPIC, LIKE_TOTAL, {"video": video_id, "count": total}),
        ]
    )


def _emit_many_likes(rises: list[tuple[int, int, int]]) -> None:
    # Two queries for the likers of the whole flush, one hop to the event loop and one dispatcher round.
    likers = _recent_likers_many({video_id: covered for video_id, _total, covered in rises})
    publish_many(
        [
            (
                topics.video_likes(video_id),
                LIKE_CREATED,
                {"video": video_id, "count": total, "covered": covered, "by": likers[video_id]},
            )
            for video_id, total, covered in rises
        ]
        + [(ALL_VIDEOS_TOPIC, LIKE_TOTAL, {"video": video_id, "count": total}) for video_id, total, _ in rises]
    )


def new_coalescer(
    *, store: coalesce.Store | None = None, schedule: coalesce.Scheduler | None = None, window_secs: float | None = None
) -> coalesce.Coalescer:
    """A coalescer announcing this app's likes; each part defaults to the configured one (tests inject)."""
    if store is None:
        store = coalesce.RedisStore.from_settings() if stores.url() else coalesce.MemoryStore()
    coalescer = coalesce.Coalescer(
        store,
        window_secs=conf.get("COALESCE_MS") / 1000 if window_secs is None else window_secs,
        read_total=_like_total,
        emit=_emit_likes,
        schedule=timers.call_later_on_loop if schedule is None else schedule,
        read_totals=_like_totals,
        emit_many=_emit_many_likes,
        on_unannounced=_not_announced,
    )
    if schedule is None:
        # Due windows queue on the event loop; one flusher thread flushes them, batch after batch, and keeps its
        # connection (and the writer's) while this process holds windows (their flushes are on their way).
        coalescer.run_flush = timers.in_thread(_FLUSHER, keep_connection=_flusher_keeps_connection)
    return coalescer


_coalescer: coalesce.Coalescer | None = None
# Request threads race to build it; two in-memory stores would each open their own windows.
_coalescer_lock = threading.Lock()


def get_coalescer() -> coalesce.Coalescer:
    """This process's coalescer, built from the settings on first use."""
    global _coalescer
    if _coalescer is None:
        with _coalescer_lock:
            if _coalescer is None:
                _coalescer = new_coalescer()
    return _coalescer


def set_coalescer(coalescer: coalesce.Coalescer | None) -> None:
    """Replace this process's coalescer (tests); None rebuilds it from the settings on next use.

    Announcements deferred for the old one are forgotten with it: its scheduler would never run their retry.
    """
    global _coalescer, _retry_scheduled
    _coalescer = coalescer
    with _unannounced_lock:
        _unannounced.clear()
        _retry_scheduled = False


# -- comments -------------------------------------------------------------------------------------


def check_comment_text(text: object) -> str:
    """Return `text` stripped if it can be stored as a comment, else raise InvalidComment saying why."""
    if not isinstance(text, str):
        raise InvalidComment("a comment must be a string")
    text = text.strip()
    if not text:
        raise InvalidComment("a comment must not be empty")
    if len(text) > MAX_COMMENT_LENGTH:
        raise InvalidComment(f"a comment may have at most {MAX_COMMENT_LENGTH} characters, not {len(text)}")
    if "\x00" in text:
        raise InvalidComment("a comment must not contain NUL characters")
    return text


def comment_data(comment: Comment) -> dict[str, Any]:
    """A comment as the API and the comment events show it."""
    return dict(CommentSerializer(comment).data)


def post_comment(video: LiveVideo, member: User, text: str) -> Comment:
    """Store a comment by `member` on a live `video`; raises VideoNotLive or InvalidComment.

    After commit, publishes `comment.created` with the comment on `video.{id}.comments`.
    """
    text = check_comment_text(text)
    with transaction.atomic():
        # A plain read, not a row lock: that lock is what every like of a hot video queues on, and a
        # comment racing the end of its video by a moment does no harm.
        if not LiveVideo.objects.filter(pk=video.pk, status=LiveVideo.Status.LIVE).exists():
            raise VideoNotLive(f"video {video.pk} has ended")
        comment = Comment.objects.create(video=video, member=member, text=text)
        data = comment_data(comment)
        transaction.on_commit(lambda: publish(topics.video_comments(video.pk), COMMENT_CREATED, data), robust=True)
    return comment


def set_comment_hidden(comments: Iterable[Comment], hidden: bool) -> int:
    """Hide (or unhide) comments; returns how many changed. Each changed one is announced after commit.

    Hiding publishes `comment.hidden` {"id", "video"} so every page drops it; unhiding publishes
    `comment.unhidden` with the whole comment so every page shows it again.
    """
    comments = list(comments)
    ids = [comment.pk for comment in comments]
    with transaction.atomic():
        changed = list(
            Comment.objects.select_for_update()
            .filter(pk__in=ids)
            .exclude(hidden=hidden)
            .select_related("member")
            .order_by("created", "id")
        )
        Comment.objects.filter(pk__in=[comment.pk for comment in changed]).update(hidden=hidden)
        events = []
        for comment in changed:
            comment.hidden = hidden
            if hidden:
                events.append((topics.video_comments(comment.video_id), COMMENT_HIDDEN, _hidden_data(comment)))
            else:
                events.append((topics.video_comments(comment.video_id), COMMENT_UNHIDDEN, comment_data(comment)))
        if events:
            transaction.on_commit(lambda: publish_many(events), robust=True)
    for comment in comments:
        comment.hidden = hidden
    return len(changed)


def _hidden_data(comment: Comment) -> dict[str, Any]:
    return {"id": comment.pk, "video": comment.video_id}


def delete_comments(comments: Iterable[Comment]) -> int:
    """Delete comments; the visible ones are announced as `comment.hidden` so every page drops them."""
    comments = list(comments)
    with transaction.atomic():
        visible = list(
            Comment.objects.filter(pk__in=[c.pk for c in comments], hidden=False).values_list("pk", "video_id")
        )
        deleted, _ = Comment.objects.filter(pk__in=[c.pk for c in comments]).delete()
        events = [
            (topics.video_comments(video_id), COMMENT_HIDDEN, {"id": pk, "video": video_id}) for pk, video_id in visible
        ]
        if events:
            transaction.on_commit(lambda: publish_many(events), robust=True)
    return deleted


# -- videos ---------------------------------------------------------------------------------------


def end_videos(videos: Iterable[LiveVideo]) -> int:
    """End live videos now: they take no more likes or comments. Returns how many ended.

    After commit, publishes `video.ended` {"video", "ended_at"} on `video.{id}.likes`: open watch pages stop."""
    with transaction.atomic():
        ending = list(
            LiveVideo.objects.select_for_update()
            .filter(pk__in=[video.pk for video in videos], status=LiveVideo.Status.LIVE)
            .values_list("pk", flat=True)
        )
        now = timezone.now()
        LiveVideo.objects.filter(pk__in=ending).update(status=LiveVideo.Status.ENDED, ended_at=now)
        events = [
            (topic, VIDEO_ENDED, {"video": pk, "ended_at": now.isoformat()})
            for pk in ending
            for topic in (topics.video_likes(pk), ALL_VIDEOS_TOPIC)
        ]
        if events:
            transaction.on_commit(lambda: publish_many(events), robust=True)
    return len(ending)
