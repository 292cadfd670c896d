"""The only writer of videos, likes and comments, and the only emitter of their events (after commit).

Events, each published through realtime.publish after the transaction that stored the change commits:
- `like.created` on `video.{id}.likes`: {"video", "count": exact total, "covered": likes since the previous
  like event, "by": up to LIKERS_PER_EVENT recent likers [{"id", "name"}]}; coalesced (likes.coalesce).
- `comment.created` and `comment.unhidden` on `video.{id}.comments`: the comment as the API shows it.
- `comment.hidden` on `video.{id}.comments`: {"id", "video"} only; a moderated text is not sent out again.
"""

import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone
from redis.exceptions import RedisError

from likes import coalesce, conf, timers
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
    including it (in batch order), VideoNotLive or NoSuchVideo."""
    per_video: dict[int, list[int]] = {}
    for index, (video_id, _member) in enumerate(items):
        per_video.setdefault(video_id, []).append(index)
    outcomes: list[int | VideoNotLive | NoSuchVideo] = [0] * len(items)
    refused: list[int] = []
    with transaction.atomic():
        # Videos in id order: two workers' batches then lock the rows they share in the same order, so they
        # queue instead of deadlocking (PostgreSQL answered a deadlock after 1 s, failing a whole batch).
        for video_id, indexes in sorted(per_video.items()):
            # One statement checks the status and counts the likes, so a video that ends meanwhile takes none.
            if not LiveVideo.objects.filter(pk=video_id, status=LiveVideo.Status.LIVE).update(
                like_count=F("like_count") + len(indexes)
            ):
                refused.append(video_id)
                continue
            Like.objects.bulk_create([Like(video_id=video_id, member_id=items[index][1]) for index in indexes])
            total = LiveVideo.objects.values_list("like_count", flat=True).get(pk=video_id)
            for offset, index in enumerate(indexes):
                outcomes[index] = total - len(indexes) + 1 + offset
            # robust: the likes are stored whatever happens next; a failure to announce is logged, not raised.
            transaction.on_commit(_announcer(video_id), robust=True)
        # Told apart only when refused (rare): an ended video is a 409, an unknown id a 404.
        existing = set(LiveVideo.objects.filter(pk__in=refused).values_list("pk", flat=True)) if refused else set()
    for video_id in refused:
        for index in per_video[video_id]:
            outcomes[index] = (
                VideoNotLive(f"video {video_id} has ended") if video_id in existing else NoSuchVideo(video_id)
            )
    return outcomes


def _write_like_batch(items: Sequence[tuple[int, int]]) -> list[int | VideoNotLive | NoSuchVideo]:
    """Sync, in the likes writer thread: one batch of async callers' likes (the async path's one database
    boundary). Outside any request, so it honours CONN_MAX_AGE itself, as a request would: on PostgreSQL the
    connection goes back to the pool after each batch, on SQLite it is reopened per batch (not per like)."""
    close_old_connections()
    try:
        return _write_likes(items)
    finally:
        close_old_connections()


# One thread: one batch is in flight per process at a time anyway (AsyncGroupCommit), and a single thread keeps
# a single database connection warm instead of each of the default executor's threads opening its own.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="likes-writer")
_awrite_like_batch: Callable[[Sequence[tuple[int, int]]], Awaitable[list[Any]]] = sync_to_async(
    _write_like_batch, thread_sensitive=False, executor=_WRITER
)


def _announcer(video_id: int) -> Callable[[], None]:
    # A named function, not a partial: Django logs a failed robust callback by its __qualname__.
    def announce_likes() -> None:
        _announce_likes(video_id)

    return announce_likes


def _announce_likes(video_id: int) -> None:
    coalescer = get_coalescer()
    try:
        coalescer.like_committed(video_id)
    except (RedisError, OSError) as exc:
        # The likes are stored; only their announcement waits for Redis (the window lock lives there).
        logger.warning("likes of video %s stored but not announced yet (%s): retrying", video_id, exc)
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
    coalescer.schedule(UNANNOUNCED_RETRY_SECS, _retry_announcements)


def _retry_announcements() -> None:
    global _retry_scheduled
    with _unannounced_lock:
        videos = sorted(_unannounced)
        _unannounced.clear()
        _retry_scheduled = False
    for video_id in videos:
        _announce_likes(video_id)  # A failure defers it again.


_likes: GroupCommit[tuple[int, int]] = GroupCommit(_write_likes)
_alikes: AsyncGroupCommit[tuple[int, int]] = AsyncGroupCommit(_awrite_like_batch)


def figures() -> dict[str, float]:
    """This process's like counters, for the worker snapshot (realtime.hooks.add_stats)."""
    return {**_likes.stats, **_alikes.stats, **stats}


def _like_total(video_id: int) -> int | None:
    return LiveVideo.objects.filter(pk=video_id).values_list("like_count", flat=True).first()


def _recent_likers(video_id: int, covered: int) -> list[dict[str, Any]]:
    likes = Like.objects.filter(video_id=video_id).select_related("member").order_by("-id")
    likers: dict[int, dict[str, Any]] = {}
    for like in likes[: min(covered, LIKERS_SCAN)]:
        if like.member is not None and like.member.pk not in likers:
            likers[like.member.pk] = {"id": like.member.pk, "name": display_name(like.member)}
            if len(likers) == LIKERS_PER_EVENT:
                break
    return list(likers.values())


def like_event_data(video_id: int, total: int, covered: int) -> dict[str, Any]:
    """The `like.created` payload announcing `covered` likes that brought the video to `total`."""
    return {"video": video_id, "count": total, "covered": covered, "by": _recent_likers(video_id, covered)}


def _emit_likes(video_id: int, total: int, covered: int) -> None:
    publish(topics.video_likes(video_id), LIKE_CREATED, like_event_data(video_id, total, covered))


def new_coalescer(
    *, store: coalesce.Store | None = None, schedule: coalesce.Scheduler | None = None, window_secs: float | None = None
) -> coalesce.Coalescer:
    """A coalescer announcing this app's likes; each part defaults to the configured one (tests inject)."""
    if store is None:
        store = coalesce.RedisStore.from_settings() if stores.url() else coalesce.MemoryStore()
    return coalesce.Coalescer(
        store,
        window_secs=conf.get("COALESCE_MS") / 1000 if window_secs is None else window_secs,
        read_total=_like_total,
        emit=_emit_likes,
        schedule=timers.call_later if schedule is None else schedule,
    )


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
    """End live videos now: they take no more likes or comments. Returns how many ended."""
    return LiveVideo.objects.filter(pk__in=[video.pk for video in videos], status=LiveVideo.Status.LIVE).update(
        status=LiveVideo.Status.ENDED, ended_at=timezone.now()
    )
