"""Topic names: how they are built and validated, and their channel-layer group names. Pure.

Who may read a topic is realtime.policies' question.
"""

import hashlib
import re

MAX_TOPIC_LENGTH = 100
# Channels' group-name alphabet, lower-cased, dotted: a topic is used as a channel-layer group name as is.
_TOPIC_RE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class InvalidTopic(ValueError):
    """A topic name that breaks the naming rules; the message says which rule."""


class TooManyTopics(ValueError):
    """A connection would hold more topics than it may."""


class ForbiddenTopic(ValueError):
    """A stream asked for a topic its owner may not read."""


def check_topic(topic: object) -> str:
    """Return `topic` if it is a valid topic name, else raise InvalidTopic saying why."""
    if not isinstance(topic, str):
        raise InvalidTopic(f"a topic must be a string, not {type(topic).__name__}")
    if not topic:
        raise InvalidTopic("a topic must not be empty")
    if len(topic) > MAX_TOPIC_LENGTH:
        raise InvalidTopic(f"topic {topic[:20]!r}... is longer than {MAX_TOPIC_LENGTH} characters")
    if not _TOPIC_RE.fullmatch(topic):
        raise InvalidTopic(
            f"topic {topic!r} is not dotted lower-case words (letters a-z, digits, '-', '_' separated by '.')"
        )
    return topic


def check_topic_count(count: int, limit: int) -> None:
    """The one topic limit: raise TooManyTopics if a connection would hold `count` > `limit` topics."""
    if count > limit:
        raise TooManyTopics(f"a connection may hold at most {limit} topics: unsubscribe from some first")


# Channels accepts group names only SHORTER than 100 characters (FIELD-NOTES), topics may have 100.
_MAX_GROUP_NAME = 99
_HASHED_PREFIX = 60


def group_name(topic: str) -> str:
    """The channel-layer group name of a valid topic: the topic itself, or a prefix + digest if too long.

    A digest name could only ever equal another real topic's name by choice of that topic; even then the
    cost is a worker receiving events it has no subscriber for (counted as stray), never a wrong delivery:
    workers fan out by topic, not by group.
    """
    if len(topic) <= _MAX_GROUP_NAME:
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:32]
    return f"{topic[:_HASHED_PREFIX]}.{digest}"


def video_likes(video_id: int) -> str:
    return f"video.{int(video_id)}.likes"


def video_comments(video_id: int) -> str:
    return f"video.{int(video_id)}.comments"


def presence_member(member_id: int) -> str:
    return f"presence.member.{int(member_id)}"


def member_private(member_id: int, name: str) -> str:
    return check_topic(f"member.{int(member_id)}.{name}")
