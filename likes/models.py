"""Live videos, their likes and their comments: fields, constraints and indexes; no side effects."""

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

MAX_COMMENT_LENGTH = 1000


def display_name(member: Any) -> str:
    """A member's public name: their full name, else their username."""
    return member.get_full_name() or member.get_username()


class LiveVideo(models.Model):
    class Status(models.TextChoices):
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    title = models.CharField(max_length=200)
    slug = models.SlugField(max_length=200, unique=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="live_videos")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.LIVE)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    description = models.TextField(blank=True)
    # Denormalised, and exact: services.like_video increments it in the same transaction that stores the
    # Like, so the API and every like event read one row instead of counting a hot video's likes. The cost
    # is that likes of ONE video serialise on this row's lock (PostgreSQL); different videos do not.
    like_count = models.PositiveBigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["status", "-started_at", "-id"], name="likes_video_status_newest")]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="live", ended_at__isnull=True) | Q(status="ended", ended_at__isnull=False),
                name="likes_video_ended_at_iff_ended",
                violation_error_message="an ended video needs its end time, and a live one must have none",
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        # like_count changes only through services' UPDATE ... F(): saving an instance loaded before some
        # likes (an admin form, a script) must not write its stale count back.
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                field.name
                for field in self._meta.concrete_fields
                if not field.primary_key and field.name != "like_count"
            ]
        super().save(*args, **kwargs)

    @property
    def is_live(self) -> bool:
        return self.status == self.Status.LIVE


class Like(models.Model):
    """One heart: a member may like a live video any number of times."""

    # The (video, id) index below leads with video, so the foreign key needs no index of its own.
    video = models.ForeignKey(LiveVideo, on_delete=models.CASCADE, related_name="likes", db_index=False)
    # SET_NULL, not CASCADE: deleting a member keeps LiveVideo.like_count equal to the number of rows.
    member = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="video_likes"
    )
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        # The latest likers of a video (the `by` list of like events) and cascades on video deletion.
        indexes = [models.Index(fields=["video", "-id"], name="likes_like_video_newest")]

    def __str__(self) -> str:
        return f"like {self.pk} of video {self.video_id}"


class Comment(models.Model):
    video = models.ForeignKey(LiveVideo, on_delete=models.CASCADE, related_name="comments", db_index=False)
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="video_comments")
    text = models.CharField(max_length=MAX_COMMENT_LENGTH)
    created = models.DateTimeField(default=timezone.now)
    hidden = models.BooleanField(default=False, help_text="Hidden by a moderator: only staff see it.")

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [
            # What viewers read: a video's visible comments, newest first (also counts them).
            models.Index(fields=["video", "hidden", "-created", "-id"], name="likes_comment_video_visible"),
            # What staff read (hidden ones included), and cascades on video deletion.
            models.Index(fields=["video", "-created", "-id"], name="likes_comment_video_newest"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(text=""), name="likes_comment_text_not_empty", violation_error_message="empty comment"
            ),
        ]

    def __str__(self) -> str:
        return self.text if len(self.text) <= 60 else self.text[:59] + "…"
