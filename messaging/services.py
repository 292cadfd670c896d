"""The only writer of conversations, participants and messages, and the only emitter of their events.

Every event is published through realtime.publish after the transaction that stored its change commits (a
rolled-back message reaches no one); the types and payloads are listed in messaging.events. Typing writes no
row: its store (messaging.indicators) decides what to announce, and it is announced at once. Removing a member
from a conversation changes its access version (messaging.access: no worker's cache lets her read it again),
then takes its topics from every live stream of hers, on every worker (realtime.revocation.revoke_topics), after
commit.
"""

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from likes import coalesce, timers
from likes.models import display_name
from messaging import access, conf, events, indicators, queries, receipts, topics
from messaging.models import MAX_MESSAGE_LENGTH, Conversation, Message, Participant
from messaging.serializers import message_data
from realtime import stores
from realtime.publishing import publish, publish_many
from realtime.revocation import revoke_topics

logger = logging.getLogger(__name__)

REMOVED_REASON = "removed_from_conversation"


class NotParticipant(Exception):
    """The member does not take part in the conversation (the API answers 404: it does not say it exists)."""


class InvalidConversation(ValueError):
    """Participants or a title that cannot make a conversation; the message says why."""


class DirectConversation(InvalidConversation):
    """A one-to-one conversation keeps its two participants."""


class ConversationFull(InvalidConversation):
    """The group has MAX_PARTICIPANTS participants already."""


class NotAllowed(Exception):
    """The member may not change this conversation's participants; the message says who may."""


# Raised by remove_participant and delete_conversations when no worker could be told (Redis): nothing changed.
AccessUnavailable = access.AccessUnavailable


class InvalidMessage(ValueError):
    """A message text that cannot be stored; the message says why."""


class NotAuthor(Exception):
    """Only a message's author may edit or delete it."""


class MessageDeleted(Exception):
    """The message was deleted: it cannot be edited."""


class MessageNotFound(Exception):
    """No such message in this conversation."""


# -- conversations and participants ---------------------------------------------------------------


def direct_key(one: int, other: int) -> str:
    low, high = sorted((int(one), int(other)))
    return f"{low}:{high}"


def create_conversation(creator: User, member_ids: Iterable[int], title: str = "") -> tuple[Conversation, bool]:
    """Start a conversation of `creator` with these members; return it and whether it is new.

    One other member and no title: their one-to-one conversation, the existing one if there is one. Raises
    InvalidConversation. After commit, each new participant gets `conversation.added` on her member topic.
    """
    others = sorted({int(member_id) for member_id in member_ids} - {creator.pk})
    title = (title or "").strip()
    if not others:
        raise InvalidConversation("name at least one other member in 'participants'")
    limit = int(conf.get("MAX_PARTICIPANTS"))
    if len(others) + 1 > limit:
        raise InvalidConversation(f"a conversation has at most {limit} participants, you included")
    found = set(get_user_model().objects.filter(pk__in=others, is_active=True).values_list("pk", flat=True))
    missing = [member_id for member_id in others if member_id not in found]
    if missing:
        raise InvalidConversation(f"no member has id {', '.join(map(str, missing[:10]))}")
    if len(others) == 1 and not title:
        return _direct(creator, others[0])
    with transaction.atomic():
        conversation = Conversation.objects.create(kind=Conversation.Kind.GROUP, title=title, created_by=creator)
        _join(conversation, [creator.pk, *others])
    return conversation, True


def _direct(creator: User, other_id: int) -> tuple[Conversation, bool]:
    key = direct_key(creator.pk, other_id)
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.DIRECT, direct_key=key, created_by=creator
            )
            _join(conversation, [creator.pk, other_id])
            return conversation, True
    except IntegrityError:
        # The pair has one already (perhaps created by the other a moment ago): that one, with both in it.
        if not Conversation.objects.filter(direct_key=key).exists():
            raise
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(direct_key=key)
        present = set(conversation.participants.values_list("member_id", flat=True))
        _join(conversation, [member_id for member_id in (creator.pk, other_id) if member_id not in present])
    return conversation, False


def _join(conversation: Conversation, member_ids: list[int]) -> list[Participant]:
    """Add members (inside the caller's transaction); announce them after commit."""
    if not member_ids:
        return []
    # Joining a conversation that already had people: they see the newcomers arrive.
    had_people = Participant.objects.filter(conversation=conversation).exists()
    rows = Participant.objects.bulk_create(
        [
            # A newcomer has read what was said before she came: her unread count starts at 0.
            Participant(conversation=conversation, member_id=member_id, last_read_seq=conversation.last_seq)
            for member_id in member_ids
        ]
    )
    conversation_id = conversation.pk
    added = {"conversation": conversation_id, "kind": conversation.kind, "title": conversation.title}
    items: list[tuple[str, str, Any]] = [
        (topics.member_conversations(member_id), events.CONVERSATION_ADDED, added) for member_id in member_ids
    ]
    if had_people:
        members = {member.pk: member for member in get_user_model().objects.filter(pk__in=member_ids)}
        items += [
            (
                topics.messages(conversation_id),
                events.PARTICIPANT_ADDED,
                {"conversation": conversation_id, "member": {"id": pk, "name": display_name(members[pk])}},
            )
            for pk in member_ids
        ]
    transaction.on_commit(lambda: publish_many(items), robust=True)
    return rows


def check_can_join(conversation: Conversation, newcomers: int) -> None:
    """Raise DirectConversation or ConversationFull unless `newcomers` more members may join `conversation`."""
    if conversation.kind != Conversation.Kind.GROUP:
        raise DirectConversation("a one-to-one conversation keeps its two members: start a group instead")
    limit = int(conf.get("MAX_PARTICIPANTS"))
    if conversation.participants.count() + newcomers > limit:
        raise ConversationFull(f"a conversation has at most {limit} participants")


def check_can_manage(conversation: Conversation, by: User, member_id: int | None = None) -> None:
    """Raise DirectConversation for a one-to-one conversation, else NotAllowed unless `by` may add members to
    `conversation` (member_id None) or remove `member_id` from it: its creator and staff may; anyone may leave."""
    if conversation.kind != Conversation.Kind.GROUP:
        raise DirectConversation("a one-to-one conversation keeps its two members: start a group instead")
    if (
        member_id == by.pk
        or by.is_staff
        or (conversation.created_by_id is not None and conversation.created_by_id == by.pk)
    ):
        return
    raise NotAllowed(
        "only the conversation's creator (or staff) may add or remove participants; "
        "you may leave it: DELETE /api/conversations/<id>/participants/<your member id>"
    )


def add_participants(
    conversation: Conversation, members: Iterable[User], *, by: User | None = None
) -> list[Participant]:
    """Add members to a group (those already in it are skipped) and return the new rows; `by`: the member asking
    (None: the admin site). Raises DirectConversation, ConversationFull or NotAllowed. After commit:
    `participant.added` on the messages topic, and `conversation.added` to each newcomer. A newcomer may
    subscribe at once (messaging.access caches participations only)."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        if by is not None:
            check_can_manage(conversation, by)
        present = set(conversation.participants.values_list("member_id", flat=True))
        new = sorted({member.pk for member in members} - present)
        if not new:
            return []
        check_can_join(conversation, len(new))
        return _join(conversation, new)


def remove_participant(conversation: Conversation, member: User, *, by: User | None = None) -> bool:
    """Take `member` out of `conversation`; False if she was not in it. `by`: the member asking (None: the admin
    site). Raises DirectConversation or NotAllowed (when `by` is given), AccessUnavailable (Redis: nothing done).

    Inside the transaction and again after commit, the conversation's access version changes (no worker's cache
    lets her in again); then her live streams lose the conversation's topics on every worker (`event:
    unsubscribed`, reason REMOVED_REASON), `participant.removed` goes to the others, `conversation.removed` to
    her, and a stop to her typing mark if she had one.
    """
    with transaction.atomic():
        if by is not None:
            locked = Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
            if locked is None:
                return False
            check_can_manage(locked, by, member.pk)
        deleted, _ = Participant.objects.filter(conversation=conversation, member=member).delete()
        if not deleted:
            return False
        access.change_versions([conversation.pk])  # before commit: a Redis failure undoes the removal
        _after_removal(conversation.pk, [member.pk])
    return True


def _after_removal(conversation_id: int, member_ids: list[int], *, conversation_gone: bool = False) -> None:
    def change_version() -> None:
        try:
            access.change_versions([conversation_id])
        except AccessUnavailable:
            # The version changed inside the transaction already: only an entry a worker filled while it was
            # open can outlive it, for at most ACCESS_CACHE_SECS. Loud, as the revocation's own failure is.
            logger.exception("conversation %s: access version not changed after commit", conversation_id)

    # Registered before the revocation's callback, so it runs first: when a worker takes the topics from her
    # streams, every cache entry that would let her take them back is stale already.
    transaction.on_commit(change_version, robust=True)
    for member_id in member_ids:
        revoke_topics(member_id, topics.all_of(conversation_id), reason=REMOVED_REASON)
    items: list[tuple[str, str, Any]] = [
        (topics.member_conversations(member_id), events.CONVERSATION_REMOVED, {"conversation": conversation_id})
        for member_id in member_ids
    ]
    if not conversation_gone:
        items += [
            (
                topics.messages(conversation_id),
                events.PARTICIPANT_REMOVED,
                {"conversation": conversation_id, "member": pk},
            )
            for pk in member_ids
        ]

    def announce() -> None:
        publish_many(items)
        if not conversation_gone:
            for member_id in member_ids:
                _stop_typing(conversation_id, member_id, events.LEFT)

    transaction.on_commit(announce, robust=True)


def delete_conversations(conversations: Iterable[Conversation]) -> int:
    """Delete conversations with their messages; every participant's streams lose their topics at once.
    Raises AccessUnavailable (Redis: nothing deleted)."""
    ids = [conversation.pk for conversation in conversations]
    with transaction.atomic():
        members: dict[int, list[int]] = {}
        for conversation_id, member_id in Participant.objects.filter(conversation_id__in=ids).values_list(
            "conversation_id", "member_id"
        ):
            members.setdefault(conversation_id, []).append(member_id)
        access.change_versions(sorted(members))  # a Redis failure undoes the deletion
        deleted = Conversation.objects.filter(pk__in=ids).delete()[1].get(Conversation._meta.label, 0)
        for conversation_id, member_ids in members.items():
            _after_removal(conversation_id, member_ids, conversation_gone=True)
    return deleted


# -- messages -------------------------------------------------------------------------------------


def check_message_text(text: object) -> str:
    """Return `text` stripped if it can be stored as a message, else raise InvalidMessage saying why."""
    if not isinstance(text, str):
        raise InvalidMessage("a message must be a string")
    text = text.strip()
    if not text:
        raise InvalidMessage("a message must not be empty")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise InvalidMessage(f"a message may have at most {MAX_MESSAGE_LENGTH:,} characters, not {len(text):,}")
    if "\x00" in text:
        raise InvalidMessage("a message must not contain NUL characters")
    return text


def send_message(conversation: Conversation, author: User, text: str) -> Message:
    """Store a message by `author`, numbered next in the conversation; raises InvalidMessage or NotParticipant.

    Her own read mark moves to it. After commit: `message.created` on the conversation's messages topic, and
    a stop of her typing mark if she had one (reason "sent").
    """
    text = check_message_text(text)
    now = timezone.now()
    with transaction.atomic():
        # The row lock numbers messages in commit order: two senders queue here (PostgreSQL; SQLite runs
        # IMMEDIATE transactions one at a time anyway).
        locked = Conversation.objects.select_for_update().filter(pk=conversation.pk).first()
        if locked is None or not Participant.objects.filter(conversation=locked, member=author).exists():
            raise NotParticipant(f"member {author.pk} is not in conversation {conversation.pk}")
        seq = locked.last_seq + 1
        Conversation.objects.filter(pk=locked.pk).update(last_seq=seq, updated=now)
        message = Message.objects.create(conversation=locked, seq=seq, author=author, text=text, created=now)
        Participant.objects.filter(conversation=locked, member=author, last_read_seq__lt=seq).update(last_read_seq=seq)
        data = message_data(message)
        conversation_id, author_id = locked.pk, author.pk

        def announce() -> None:
            publish(topics.messages(conversation_id), events.MESSAGE_CREATED, data)
            _stop_typing(conversation_id, author_id, events.SENT)

        transaction.on_commit(announce, robust=True)
    conversation.last_seq, conversation.updated = seq, now
    return message


def edit_message(message: Message, author: User, text: str) -> Message:
    """Replace the text of `author`'s message; raises InvalidMessage, NotAuthor or MessageDeleted.
    After commit: `message.edited` with the whole message."""
    text = check_message_text(text)
    with transaction.atomic():
        locked = Message.objects.select_for_update(of=("self",)).select_related("author").get(pk=message.pk)
        if locked.author_id != author.pk:
            raise NotAuthor("only its author may edit a message")
        if locked.deleted is not None:
            raise MessageDeleted("this message was deleted: it cannot be edited")
        locked.text, locked.edited = text, timezone.now()
        locked.save(update_fields=["text", "edited"])
        data = message_data(locked)
        topic = topics.messages(locked.conversation_id)
        transaction.on_commit(lambda: publish(topic, events.MESSAGE_EDITED, data), robust=True)
    return locked


def delete_message(message: Message, author: User) -> bool:
    """Delete `author`'s message (it stays as a tombstone without text); False if it was deleted already.
    Raises NotAuthor. After commit: `message.deleted`."""
    if message.author_id != author.pk:
        raise NotAuthor("only its author may delete a message")
    return _delete([message.pk], by_moderator=False) == 1


def moderate_messages(messages: Iterable[Message]) -> int:
    """Delete messages as a moderator (the admin); returns how many were not deleted already. Each is announced
    as `message.deleted` {"by_moderator": true}, so it disappears from every open page."""
    return _delete([message.pk for message in messages], by_moderator=True)


def _delete(ids: list[int], *, by_moderator: bool) -> int:
    now = timezone.now()
    with transaction.atomic():
        rows = list(
            Message.objects.select_for_update()
            .filter(pk__in=ids, deleted__isnull=True)
            .order_by("conversation_id", "seq")
            .values("pk", "conversation_id", "seq", "author_id")
        )
        Message.objects.filter(pk__in=[row["pk"] for row in rows]).update(
            text="", deleted=now, deleted_by_moderator=by_moderator
        )
        items: list[tuple[str, str, Any]] = [
            (
                topics.messages(row["conversation_id"]),
                events.MESSAGE_DELETED,
                {
                    "id": row["pk"],
                    "conversation": row["conversation_id"],
                    "seq": row["seq"],
                    "author": row["author_id"],
                    "deleted": now.isoformat().replace("+00:00", "Z"),
                    "by_moderator": by_moderator,
                },
            )
            for row in rows
        ]
        if items:
            transaction.on_commit(lambda: publish_many(items), robust=True)
    return len(rows)


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReadState:
    last_read_seq: int
    unread: int


def mark_read(conversation: Conversation, member: User, message_id: int) -> ReadState:
    """Move `member`'s read mark forward to the message `message_id` of `conversation` (never backwards).

    Raises MessageNotFound or NotParticipant. After commit, if it moved: a coalesced `receipt.seen` on the
    conversation's receipts topic and `conversation.read` on her member topic (messaging.receipts).
    """
    with transaction.atomic():
        seq = Message.objects.filter(pk=message_id, conversation=conversation).values_list("seq", flat=True).first()
        if seq is None:
            raise MessageNotFound(f"conversation {conversation.pk} has no message {message_id}")
        participant = (
            Participant.objects.filter(conversation=conversation, member=member).values("pk", "last_read_seq").first()
        )
        if participant is None:
            raise NotParticipant(f"member {member.pk} is not in conversation {conversation.pk}")
        last_read_seq = participant["last_read_seq"]
        if seq > last_read_seq:
            Participant.objects.filter(pk=participant["pk"], last_read_seq__lt=seq).update(last_read_seq=seq)
            last_read_seq = Participant.objects.values_list("last_read_seq", flat=True).get(pk=participant["pk"])
            participant_id = participant["pk"]
            transaction.on_commit(lambda: _receipt_committed(participant_id), robust=True)
    return ReadState(last_read_seq, queries.unread_count(conversation.pk, member.pk, last_read_seq))


def _receipt_committed(participant_id: int) -> None:
    try:
        get_receipts().read_committed(participant_id)
    except (RedisError, OSError) as exc:
        # The mark is stored; its receipt is announced with her next read (pages load marks on refetch).
        logger.warning("read mark of participant %s stored but not announced (%s)", participant_id, exc)


def _emit_receipt(mark: receipts.ReadMark) -> None:
    publish_many(
        [
            (
                topics.receipts(mark.conversation_id),
                events.RECEIPT_SEEN,
                {
                    "conversation": mark.conversation_id,
                    "member": mark.member_id,
                    "seq": mark.seq,
                    "message": mark.message_id,
                },
            ),
            (
                topics.member_conversations(mark.member_id),
                events.CONVERSATION_READ,
                {"conversation": mark.conversation_id, "last_read_seq": mark.seq, "unread": mark.unread},
            ),
        ]
    )


def new_receipts(
    *, store: coalesce.Store | None = None, schedule: coalesce.Scheduler | None = None, window_secs: float | None = None
) -> receipts.Coalescer:
    """A receipts coalescer; each part defaults to the configured one (tests inject)."""
    if store is None:
        store = coalesce.RedisStore.from_settings() if stores.url() else coalesce.MemoryStore()
    return receipts.Coalescer(
        store,
        window_secs=conf.get("RECEIPT_COALESCE_MS") / 1000 if window_secs is None else window_secs,
        read=queries.read_mark,
        emit=_emit_receipt,
        schedule=timers.call_later if schedule is None else schedule,
    )


_receipts: receipts.Coalescer | None = None
_receipts_lock = threading.Lock()


def get_receipts() -> receipts.Coalescer:
    """This process's receipts coalescer, built from the settings on first use."""
    global _receipts
    if _receipts is None:
        with _receipts_lock:
            if _receipts is None:
                _receipts = new_receipts()
    return _receipts


def set_receipts(coalescer: receipts.Coalescer | None) -> None:
    """Replace this process's receipts coalescer (tests); None rebuilds it from the settings on next use."""
    global _receipts
    _receipts = coalescer


# -- typing ---------------------------------------------------------------------------------------


def set_typing(
    conversation: Conversation, member: User, typing: bool, *, now: float | None = None
) -> indicators.Started:
    """Say that `member` is typing in `conversation` (refresh it at least every TYPING_TIMEOUT_SECS), or that
    she stopped; return what this call announced. Raises RedisError when the store is unreachable.

    A start is announced at most once per TYPING_THROTTLE_SECS (`typing` {"typing": true, "expires_in"}); a
    stop once per announced start. A mark not refreshed is stopped by a worker's sweeper (reason "expired").
    """
    now = time.time() if now is None else now
    if not typing:
        stopped = _stop_typing(conversation.pk, member.pk, events.STOPPED, raise_errors=True)
        return indicators.Started(announced=stopped, shown=False)
    timeout = float(conf.get("TYPING_TIMEOUT_SECS"))
    throttle = float(conf.get("TYPING_THROTTLE_SECS"))
    started = indicators.get_store().start(
        conversation.pk, member.pk, now=now, throttle_secs=throttle, timeout_secs=timeout
    )
    if started.announced:
        data = events.typing_started(conversation.pk, member.pk, display_name(member), timeout)
        publish(topics.typing(conversation.pk), events.TYPING, data)
    return started


def _stop_typing(conversation_id: int, member_id: int, reason: str, *, raise_errors: bool = False) -> bool:
    try:
        stopped = indicators.get_store().stop(conversation_id, member_id)
    except (RedisError, OSError):
        if raise_errors:
            raise
        # A side effect of sending or leaving: the mark expires by itself, and the sweeper announces it.
        logger.warning("typing mark of member %s in %s not cleared (Redis)", member_id, conversation_id)
        return False
    if stopped:
        publish(
            topics.typing(conversation_id), events.TYPING, events.typing_stopped(conversation_id, member_id, reason)
        )
    return stopped
