"""Reads of conversations and messages for the API, the page and the receipts; a fixed number of queries each."""

import re
from typing import Any

from django.db.models import Count, F, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from messaging.models import Conversation, Message, Participant
from messaging.receipts import ReadMark
from messaging.serializers import participant_data

# The ids a BigAutoField can hold; anything else names nothing.
_ID_RE = re.compile(r"[0-9]{1,18}")


def parse_id(raw: object) -> int | None:
    """The id in a URL segment, or None if it cannot be one (so it is a 404, never a 500)."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    if not isinstance(raw, str) or not _ID_RE.fullmatch(raw):
        return None
    return int(raw)


def conversation_of(member_id: int, raw_id: object) -> Conversation | None:
    """The conversation named by a URL segment if `member_id` takes part in it; else None (never says which)."""
    conversation_id = parse_id(raw_id)
    if conversation_id is None:
        return None
    return Conversation.objects.filter(pk=conversation_id, participants__member_id=member_id).first()


def message_in(conversation: Conversation, raw_id: object) -> Message | None:
    message_id = parse_id(raw_id)
    if message_id is None:
        return None
    return Message.objects.filter(pk=message_id, conversation=conversation).select_related("author").first()


def participating(member_id: int, conversation_ids: list[int]) -> set[int]:
    """Which of these conversations `member_id` takes part in: ONE query (the topic read rule's)."""
    rows = Participant.objects.filter(member_id=member_id, conversation_id__in=conversation_ids)
    return set(rows.values_list("conversation_id", flat=True))


def _unread_subquery(member_id: int) -> Any:
    unread = (
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"), seq__gt=OuterRef("last_read_seq"), deleted__isnull=True
        )
        .exclude(author_id=member_id)
        .order_by()
        .values("conversation_id")
        .annotate(total=Count("pk"))
        .values("total")
    )
    return Coalesce(Subquery(unread, output_field=IntegerField()), Value(0))


def unread_count(conversation_id: int, member_id: int, last_read_seq: int) -> int:
    """Messages of others after `last_read_seq`, deleted ones excepted."""
    return (
        Message.objects.filter(conversation_id=conversation_id, seq__gt=last_read_seq, deleted__isnull=True)
        .exclude(author_id=member_id)
        .count()
    )


def memberships(member_id: int) -> QuerySet[Participant]:
    """A member's participant rows with their conversation, `unread` and `updated` (the conversation's last
    activity, which pages order by) annotated, most recent first."""
    return (
        Participant.objects.filter(member_id=member_id)
        .select_related("conversation")
        .annotate(unread=_unread_subquery(member_id), updated=F("conversation__updated"))
        .order_by("-updated", "-conversation_id")
    )


def summaries(rows: list[Participant]) -> list[dict[str, Any]]:
    """Conversations of the member of `rows`, for ConversationSerializer: two queries whatever their number."""
    ids = [row.conversation_id for row in rows]
    others: dict[int, list[dict[str, Any]]] = {conversation_id: [] for conversation_id in ids}
    for participant in (
        Participant.objects.filter(conversation_id__in=ids).select_related("member").order_by("joined", "id")
    ):
        others[participant.conversation_id].append(participant_data(participant.member, participant.last_read_seq))
    last: dict[int, Message] = {}
    wanted = [Q(conversation_id=row.conversation_id, seq=row.conversation.last_seq) for row in rows]
    wanted = [q for q, row in zip(wanted, rows, strict=True) if row.conversation.last_seq]
    if wanted:
        query = wanted[0]
        for more in wanted[1:]:
            query |= more
        for message in Message.objects.filter(query).select_related("author"):
            last[message.conversation_id] = message
    return [
        {
            "id": row.conversation_id,
            "kind": row.conversation.kind,
            "title": row.conversation.title,
            "created": row.conversation.created,
            "updated": row.conversation.updated,
            "last_seq": row.conversation.last_seq,
            "last_read_seq": row.last_read_seq,
            "unread": row.unread,  # type: ignore[attr-defined]  # annotated by memberships()
            "participants": others[row.conversation_id],
            "last_message": last.get(row.conversation_id),
        }
        for row in rows
    ]


def summary(conversation: Conversation, member_id: int) -> dict[str, Any]:
    row = memberships(member_id).get(conversation=conversation)
    return summaries([row])[0]


def messages_page(
    conversation: Conversation, *, before: int | None = None, after: int | None = None, limit: int = 50
) -> tuple[list[Message], bool, bool]:
    """Up to `limit` messages, oldest first: the newest ones, those just before `before`, or just after `after`.
    Also whether older and newer messages exist beyond them."""
    messages = Message.objects.filter(conversation=conversation).select_related("author")
    if after is not None:
        page = list(messages.filter(seq__gt=after).order_by("seq")[: limit + 1])
        newer = len(page) > limit
        page = page[:limit]
        older = after > 0 and messages.filter(seq__lte=after).exists()
        return page, older, newer
    if before is not None:
        messages = messages.filter(seq__lt=before)
    page = list(messages.order_by("-seq")[: limit + 1])
    older = len(page) > limit
    page = page[:limit]
    page.reverse()
    newer = before is not None and conversation.last_seq >= before
    return page, older, newer


def read_mark(participant_id: int) -> ReadMark | None:
    """A participant's committed read mark, the message at it and her unread count (None: she left)."""
    row = Participant.objects.filter(pk=participant_id).values("conversation_id", "member_id", "last_read_seq").first()
    if row is None:
        return None
    conversation_id, member_id, seq = row["conversation_id"], row["member_id"], row["last_read_seq"]
    message_id = Message.objects.filter(conversation_id=conversation_id, seq=seq).values_list("pk", flat=True).first()
    return ReadMark(
        participant_id=participant_id,
        conversation_id=conversation_id,
        member_id=member_id,
        seq=seq,
        message_id=message_id,
        unread=unread_count(conversation_id, member_id, seq),
    )
