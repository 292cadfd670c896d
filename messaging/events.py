"""Messaging's event types and the payloads that need no database. Pure.

On `conversation.{id}.messages` (stored, resumable): `message.created` and `message.edited` (the message as
the API shows it), `message.deleted` ({"id", "conversation", "seq", "author", "deleted", "by_moderator"}: a
deleted text is never sent again), `participant.added` ({"conversation", "member": {"id", "name"}}) and
`participant.removed` ({"conversation", "member"}).
On `conversation.{id}.typing` (ephemeral: never stored nor replayed): `typing`.
On `conversation.{id}.receipts` (stored): `receipt.seen` ({"conversation", "member", "seq", "message"}).
On `member.{id}.conversations` (that member only): `conversation.added` ({"conversation", "kind", "title"}),
`conversation.removed` ({"conversation"}), `conversation.read` ({"conversation", "last_read_seq", "unread"}:
her read mark moved, from any of her pages or devices).
"""

from typing import Any

MESSAGE_CREATED = "message.created"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
PARTICIPANT_ADDED = "participant.added"
PARTICIPANT_REMOVED = "participant.removed"
TYPING = "typing"
RECEIPT_SEEN = "receipt.seen"
CONVERSATION_ADDED = "conversation.added"
CONVERSATION_REMOVED = "conversation.removed"
CONVERSATION_READ = "conversation.read"

# Why a member stopped typing, in `typing` {"typing": false} events.
STOPPED = "stopped"  # she said so (POST .../typing {"typing": false})
SENT = "sent"  # she sent a message
EXPIRED = "expired"  # no refresh within TYPING_TIMEOUT_SECS
LEFT = "left"  # she is no longer a participant


def typing_started(conversation_id: int, member_id: int, name: str, expires_in_secs: float) -> dict[str, Any]:
    """`typing` while a member types: pages show it until a stop, or `expires_in` seconds without another."""
    return {
        "conversation": conversation_id,
        "member": member_id,
        "name": name,
        "typing": True,
        "expires_in": expires_in_secs,
    }


def typing_stopped(conversation_id: int, member_id: int, reason: str) -> dict[str, Any]:
    return {"conversation": conversation_id, "member": member_id, "typing": False, "reason": reason}
