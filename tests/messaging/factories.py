"""Plain factory functions for the messaging tests: rows straight to the tables, announcing nothing."""

from typing import Any

from django.utils import timezone

from messaging.models import Conversation, Message, Participant
from messaging.services import direct_key
from tests.likes.factories import make_member

__all__ = ["make_conversation", "make_member", "make_message"]


def make_conversation(*members: Any, title: str = "", direct: bool = False) -> Conversation:
    if direct:
        conversation = Conversation.objects.create(
            kind=Conversation.Kind.DIRECT, direct_key=direct_key(members[0].pk, members[1].pk)
        )
    else:
        conversation = Conversation.objects.create(kind=Conversation.Kind.GROUP, title=title or "group")
    Participant.objects.bulk_create(Participant(conversation=conversation, member=member) for member in members)
    return conversation


def make_message(conversation: Conversation, author: Any, text: str = "hello") -> Message:
    conversation.refresh_from_db()
    seq = conversation.last_seq + 1
    now = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(last_seq=seq, updated=now)
    conversation.last_seq, conversation.updated = seq, now
    return Message.objects.create(conversation=conversation, seq=seq, author=author, text=text, created=now)
