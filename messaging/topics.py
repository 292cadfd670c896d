"""A conversation's topic names. Pure.

`realtime.topics` builds the core's and likes' names; messaging owns the `conversation.{id}.*` namespace
(declared in MessagingConfig.ready), so its names are built here, checked by the core's one rule.
"""

import re

from realtime.topics import check_topic, member_private

MESSAGES = "messages"
TYPING = "typing"
RECEIPTS = "receipts"
# Never stored nor replayed (realtime.history.declare_ephemeral): a typing indicator is only true now.
EPHEMERAL_PATTERN = r"conversation\.[0-9]+\.typing"
NAMESPACE_PATTERN = "conversation.{id}.*"
_PARSE = re.compile(r"conversation\.([0-9]+)\.(messages|typing|receipts)")


def conversation_topic(conversation_id: int, name: str) -> str:
    return check_topic(f"conversation.{int(conversation_id)}.{name}")


def messages(conversation_id: int) -> str:
    return conversation_topic(conversation_id, MESSAGES)


def typing(conversation_id: int) -> str:
    return conversation_topic(conversation_id, TYPING)


def receipts(conversation_id: int) -> str:
    return conversation_topic(conversation_id, RECEIPTS)


def all_of(conversation_id: int) -> list[str]:
    """Every topic of one conversation: what a removed participant loses."""
    return [messages(conversation_id), typing(conversation_id), receipts(conversation_id)]


def member_conversations(member_id: int) -> str:
    """A member's own topic for her conversation list (added, removed, read elsewhere): only she reads it."""
    return member_private(member_id, "conversations")


def parse(topic: str) -> tuple[int, str] | None:
    """(conversation id, name) of a conversation topic, or None."""
    found = _PARSE.fullmatch(topic)
    return None if found is None else (int(found.group(1)), found.group(2))
