"""Conversations, their participants and their messages: fields, constraints and indexes; no side effects."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

MAX_MESSAGE_LENGTH = 4000
MAX_TITLE_LENGTH = 200


class Conversation(models.Model):
    class Kind(models.TextChoices):
        DIRECT = "direct", "One-to-one"
        GROUP = "group", "Group"

    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.GROUP)
    title = models.CharField(max_length=MAX_TITLE_LENGTH, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(default=timezone.now)
    # The last message's time (or the creation's): conversation lists put the most recent first.
    updated = models.DateTimeField(default=timezone.now)
    # The seq of the newest message. services.send_message raises it under this row's lock, so a
    # conversation's messages are numbered 1, 2, 3... in commit order, with no hole and no tie: read marks
    # and unread counts are positions in that one order.
    last_seq = models.PositiveBigIntegerField(default=0, editable=False)
    # "<smaller member id>:<larger>" for a one-to-one conversation, so two members have at most one.
    direct_key = models.CharField(max_length=41, null=True, blank=True, unique=True, editable=False)

    class Meta:
        ordering = ["-updated", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="group", direct_key__isnull=True) | Q(kind="direct", direct_key__isnull=False),
                name="messaging_direct_key_iff_direct",
                violation_error_message="a one-to-one conversation has a direct key, a group none",
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"conversation {self.pk}"


class Participant(models.Model):
    """A member in a conversation, and how far she has read it."""

    # The (conversation, member) constraint below leads with conversation: no index of its own needed.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="participants", db_index=False
    )
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    joined = models.DateTimeField(default=timezone.now)
    # The seq of the last message she has read (0: none); it only ever rises (services.mark_read).
    last_read_seq = models.PositiveBigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "member"], name="messaging_participant_once"),
        ]

    def __str__(self) -> str:
        return f"member {self.member_id} in conversation {self.conversation_id}"


class Message(models.Model):
    # The (conversation, seq) constraint below leads with conversation: no index of its own needed.
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages", db_index=False)
    seq = models.PositiveBigIntegerField()
    # SET_NULL: a deleted member's messages stay in the conversation, without an author.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="messages_sent"
    )
    text = models.TextField(max_length=MAX_MESSAGE_LENGTH, blank=True)
    created = models.DateTimeField(default=timezone.now)
    edited = models.DateTimeField(null=True, blank=True)
    # A deleted message stays as a tombstone (its text emptied) so pages drop it in place, its seq stays
    # taken, and editing it answers 409 rather than 404.
    deleted = models.DateTimeField(null=True, blank=True)
    deleted_by_moderator = models.BooleanField(default=False)

    class Meta:
        ordering = ["conversation", "seq"]
        constraints = [
            # Also the index every read uses: a page of messages by seq, and unread counts (seq > last read).
            models.UniqueConstraint(fields=["conversation", "seq"], name="messaging_message_seq_once"),
            models.CheckConstraint(
                condition=Q(deleted__isnull=False, text="") | Q(deleted__isnull=True) & ~Q(text=""),
                name="messaging_message_text_iff_not_deleted",
                violation_error_message="a message has text until it is deleted, and none after",
            ),
        ]

    def __str__(self) -> str:
        if self.deleted:
            return "(deleted)"
        return self.text if len(self.text) <= 60 else self.text[:59] + "…"
