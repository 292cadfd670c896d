"""Events: their type names, unique increasing ids, and their one-time encoding to an SSE frame. Pure."""

import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field

MAX_TYPE_LENGTH = 64
_TYPE_RE = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class InvalidEvent(ValueError):
    """An event that cannot be published; the message says why."""


# The stream's own frames, written by the server alone (realtime.stream, realtime.hub), and the names an
# EventSource gives meaning to: a published event of one of these types would reconnect every viewer (`reset`),
# make a client forget its connection id (`connected`), show it as broken (`error`), refetch (`gap`) or drop
# its stream (`revoked`, `closing`) or topics (`unsubscribed`).
CONTROL_TYPES = frozenset(
    {"connected", "reset", "gap", "error", "message", "open", "revoked", "closing", "unsubscribed"}
)


class ReservedType(InvalidEvent):
    """An event type that only the stream itself may send."""


def check_type(event_type: object) -> str:
    """Return `event_type` if it is a dotted lower-case name such as `like.created`, else raise.

    Raises ReservedType for the stream's control frames: no publish path (Python, API, peers) may send them.
    """
    if not isinstance(event_type, str) or not event_type:
        raise InvalidEvent("an event type must be a non-empty string such as 'like.created'")
    if len(event_type) > MAX_TYPE_LENGTH or not _TYPE_RE.fullmatch(event_type):
        raise InvalidEvent(
            f"event type {event_type[:70]!r} is not dotted lower-case words of at most {MAX_TYPE_LENGTH} characters"
        )
    if event_type in CONTROL_TYPES:
        raise ReservedType(f"event type {event_type!r} is a control frame of the stream: only the server sends it")
    return event_type


class IdClock:
    """Event ids `<microseconds>-<node>`: unique across processes and data centres, increasing per process.

    A hybrid clock: never behind the wall clock, never repeats or goes back in this process, so events that
    one process publishes on a topic carry increasing ids; events from different processes are ordered by
    their publish time to the microsecond.
    """

    def __init__(self, node: str) -> None:
        self.node = node
        self._last = 0
        self._lock = threading.Lock()

    def next_id(self, now: float) -> str:
        micros = int(now * 1_000_000)
        with self._lock:
            self._last = max(self._last + 1, micros)
            return f"{self._last}-{self.node}"


def new_node_name(data_center: str) -> str:
    """A name for this process that no other process, here or in another data centre, shares."""
    return f"{data_center}.{os.getpid():x}{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Template:
    """An event's SSE frame but for its topic position, which the dispatch round gives it (realtime.history).

    `head` is the `event:` line, `body` the `data:` line up to the end of its JSON object, left open for
    `"epoch"` and `"offset"`. The JSON escapes every control character and types and topics are plain
    names, so no part can end the frame or start a field.
    """

    head: bytes
    body: bytes

    def __len__(self) -> int:
        return len(self.head) + len(self.body) + 3


def frame_at(template: Template, topic: str, epoch: str, offset: int) -> bytes:
    """The frame with its position: `id: <topic>:<epoch>:<offset>` (what EventSource sends back as
    Last-Event-ID) and the same in its JSON. Without an epoch (a topic without history), no id line.

    realtime.dispatcher's round script builds the same bytes in Lua: keep the two in step.
    """
    if not epoch:
        return template.head + template.body + b"}\n\n"
    at = b"%d" % offset
    tag = epoch.encode()
    position = (b"id: ", topic.encode(), b":", tag, b":", at, b"\n")
    return b"".join((template.head, *position, template.body, b',"epoch":"', tag, b'","offset":', at, b"}\n\n"))


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    topic: str
    type: str
    data: object  # any JSON value, as the publisher gave it (encode_template checks it is one).
    published_at: float
    origin: str = ""
    template: Template = field(default=Template(b"", b""), compare=False, repr=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "topic": self.topic,
            "type": self.type,
            "data": self.data,
            "published_at": self.published_at,
        }


def encode_template(event_id: str, topic: str, event_type: str, data: object, published_at: float) -> Template:
    """The event's frame, built once and shared by every connection that receives it, but for its position.

    json.dumps escapes every control character, so the data line can hold no CR or LF: a payload
    cannot end the frame or inject fields.
    """
    try:
        payload = json.dumps(
            {"id": event_id, "topic": topic, "type": event_type, "data": data, "published_at": published_at},
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"event data is not JSON-serialisable: {exc}") from exc
    try:
        body = b"data: " + payload[:-1].encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\ud800") is valid JSON text but no character: it cannot be sent as UTF-8.
        raise InvalidEvent("event data holds a lone surrogate (not a Unicode character)") from None
    return Template(f"event: {event_type}\n".encode(), body)
