"""Reads of videos and comments for the API and the admin; the counts come annotated, never per row."""

import re

from django.db.models import Count, Q, QuerySet

from likes.models import Comment, LiveVideo

# The ids a BigAutoField can hold; anything else cannot name a video.
_VIDEO_ID_RE = re.compile(r"[0-9]{1,18}")


def videos_with_counts() -> QuerySet[LiveVideo]:
    """Videos with their owner and `comment_count` (visible comments) in one query."""
    return LiveVideo.objects.select_related("owner").annotate(
        comment_count=Count("comments", filter=Q(comments__hidden=False))
    )


def parse_video_id(raw: object) -> int | None:
    """The video id in a URL segment, or None if it cannot be one (so it is a 404, never a 500)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not _VIDEO_ID_RE.fullmatch(raw):
        return None
    return int(raw)


def find_video(raw_id: object, queryset: QuerySet[LiveVideo] | None = None) -> LiveVideo | None:
    """The video named by a URL segment, or None."""
    video_id = parse_video_id(raw_id)
    if video_id is None:
        return None
    return (LiveVideo.objects.all() if queryset is None else queryset).filter(pk=video_id).first()


def comments_of(video: LiveVideo, *, include_hidden: bool) -> QuerySet[Comment]:
    """A video's comments with their members, hidden ones only if asked (staff)."""
    comments = Comment.objects.filter(video=video).select_related("member")
    return comments if include_hidden else comments.filter(hidden=False)
