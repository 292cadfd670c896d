"""Who may read a topic and what the generic publish API may send to it, per namespace. Pure.

Each app declares the namespaces it owns from its AppConfig.ready (`declare`), the operator opens others to
API publishers in settings (REALTIME OPEN_NAMESPACES), and anything nobody declared is refused, for reading
and for publishing (deny by default). Server code publishes through `realtime.publish()` and is not limited
here: a namespace's owner decides in its services what it announces.

A pattern is a dotted topic with `{name}` for a number (captured) and a final `*` for one or more further
segments: `video.{id}.likes`, `member.{member}.*`. Read rules: PUBLIC (anyone, anonymous too), SIGNED_IN,
MEMBER (only the member named by the pattern's `{member}`), NOBODY, or a function `(member_id, params) ->
bool`. A rule only the owning app's data can decide (who takes part in a conversation) is `aread`: an async
function given the member and EVERY topic of the check in that namespace at once, so one check costs one
database query however many topics it names; it runs after `read` allowed them.
"""

import re
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from realtime.topics import ForbiddenTopic

ReadRule = Callable[[int | None, Mapping[str, str]], bool]
# (member_id, the params of each topic) -> whether each may be read, in the same order.
AsyncReadRule = Callable[[int | None, list[Mapping[str, str]]], Awaitable[list[bool]]]


def PUBLIC(member_id: int | None, params: Mapping[str, str]) -> bool:
    return True


def SIGNED_IN(member_id: int | None, params: Mapping[str, str]) -> bool:
    return member_id is not None


def MEMBER(member_id: int | None, params: Mapping[str, str]) -> bool:
    return member_id is not None and params.get("member") == str(member_id)


def NOBODY(member_id: int | None, params: Mapping[str, str]) -> bool:
    return False


ANY_TYPE = "*"


class PublishRefused(Exception):
    """The generic publish API may not send this event here; the message names the rule."""


@dataclass(frozen=True)
class Namespace:
    """A family of topics, who may read them, and which event types the publish API may send to them."""

    pattern: str
    owner: str
    read: ReadRule = PUBLIC
    # Event types API publishers (with the realtime.publish_event permission) may send; empty: none, the
    # owner's services alone publish here; ANY_TYPE: any type but the stream's control frames.
    api_types: frozenset[str] = frozenset()
    aread: AsyncReadRule | None = None
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "regex", _compile(self.pattern))

    def match(self, topic: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(topic)
        return None if found is None else found.groupdict()


def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    segments = pattern.split(".")
    for index, segment in enumerate(segments):
        if segment == "*":
            if index != len(segments) - 1:
                raise ValueError(f"namespace pattern {pattern!r}: '*' may only end a pattern")
            parts.append(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
        elif segment.startswith("{") and segment.endswith("}"):
            parts.append(f"(?P<{segment[1:-1]}>[0-9]+)")
        elif re.fullmatch(r"[a-z0-9_-]+", segment):
            parts.append(re.escape(segment))
        else:
            raise ValueError(f"namespace pattern {pattern!r}: {segment!r} is not a word, a {{name}} or a final '*'")
    return re.compile(r"\.".join(parts))


_declared: list[Namespace] = []


def declare(namespace: Namespace) -> Namespace:
    """Declare a namespace (from the owning app's AppConfig.ready); declaring the same pattern again replaces it."""
    for index, existing in enumerate(_declared):
        if existing.pattern == namespace.pattern:
            _declared[index] = namespace
            return namespace
    _declared.append(namespace)
    return namespace


def declared() -> list[Namespace]:
    return list(_declared)


def open_namespace(name: str) -> Namespace:
    """An operator-opened namespace (REALTIME OPEN_NAMESPACES): public to read, any type from the publish API."""
    return Namespace(f"{name}.*", owner="settings (REALTIME_OPEN_NAMESPACES)", api_types=frozenset({ANY_TYPE}))


def find(topic: str, open_names: Collection[str] = ()) -> tuple[Namespace, dict[str, str]] | None:
    """The namespace a valid topic belongs to and the values its pattern captured; None if nobody declared it."""
    for namespace in _declared:
        params = namespace.match(topic)
        if params is not None:
            return namespace, params
    first = topic.partition(".")[0]
    if first in open_names:
        return open_namespace(first), {}
    return None


async def acheck_read(topics: Iterable[str], member_id: int | None, open_names: Iterable[str] = ()) -> None:
    """Async: raise ForbiddenTopic for the first topic a stream owned by `member_id` may not read, saying which
    rule. The apps' async rules run once per namespace for all its topics."""
    names = frozenset(open_names)  # once per request, not once per topic
    deferred: dict[str, tuple[Namespace, AsyncReadRule, list[tuple[str, dict[str, str]]]]] = {}
    for topic in topics:
        found = find(topic, names)
        if found is None:
            raise ForbiddenTopic(f"no app declares the namespace of {topic!r}, so nobody may read it")
        namespace, params = found
        if not namespace.read(member_id, params):
            raise ForbiddenTopic(f"this stream may not read {topic!r} ({namespace.owner}: {namespace.read.__name__})")
        if namespace.aread is not None:
            deferred.setdefault(namespace.pattern, (namespace, namespace.aread, []))[2].append((topic, params))
    for namespace, rule, items in deferred.values():
        allowed = await rule(member_id, [params for _, params in items])
        for (topic, _), ok in zip(items, allowed, strict=True):
            if not ok:
                raise ForbiddenTopic(f"this stream may not read {topic!r} ({namespace.owner}: {rule.__name__})")


def check_api_publish(topic: str, event_type: str, open_names: Collection[str] = ()) -> None:
    """Raise PublishRefused unless the generic publish API may send `event_type` to `topic`."""
    found = find(topic, open_names)
    if found is None:
        raise PublishRefused(f"no app declares the namespace of {topic!r}: nothing may be published to it")
    namespace, _ = found
    if ANY_TYPE in namespace.api_types or event_type in namespace.api_types:
        return
    if not namespace.api_types:
        raise PublishRefused(f"{topic!r} is published by {namespace.owner} only, never through the publish API")
    allowed = ", ".join(sorted(namespace.api_types))
    raise PublishRefused(f"the publish API may send only {allowed} to {topic!r} ({namespace.owner})")
