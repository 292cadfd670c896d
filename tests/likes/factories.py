"""Plain factory functions for the likes tests."""

from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone

from likes.models import Comment, LiveVideo


def make_member(username: str = "alice", first_name: str = "", **extra: Any) -> Any:
    # No password: hashing one costs ~0.2 s; tests sign in with tokens or force_login.
    return get_user_model().objects.create_user(username=username, first_name=first_name, **extra)


def make_video(owner: Any, slug: str = "keynote", *, ended: bool = False, **extra: Any) -> LiveVideo:
    fields: dict[str, Any] = {"title": slug.replace("-", " ").title(), "slug": slug, "owner": owner}
    if ended:
        fields.update(status=LiveVideo.Status.ENDED, ended_at=timezone.now())
    fields.update(extra)
    return LiveVideo.objects.create(**fields)


def make_comment(video: LiveVideo, member: Any, text: str = "hello", *, hidden: bool = False) -> Comment:
    # Straight to the table, not through services: a fixture, not an action, so it announces nothing.
    return Comment.objects.create(video=video, member=member, text=text, hidden=hidden)
