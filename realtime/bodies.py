"""What each real-time endpoint accepts: one pure validation function per request body or query. Pure.

Each takes what JSON parsing produced (or the query's values) and returns plain values, or raises Invalid
with a message for the reader and, where fields are at fault, `errors` keyed by field (the JSON shape of
every API error: `{"detail", "code", "errors"}`). No I/O, no Django: testable from a table.
"""

from collections.abc import Mapping

from realtime.events import InvalidEvent, ReservedType, check_type
from realtime.history import InvalidPosition, Position, parse_event_id, parse_position
from realtime.topics import InvalidTopic, check_topic, check_topic_count

MAX_PUBLISH_BATCH = 500
MAX_CONNECTION_ID_LENGTH = 300
SUBSCRIPTION_EXAMPLE = '{"connection_id": "...", "topics": ["video.1.likes"]}'


class Invalid(ValueError):
    """A request body or query that cannot be accepted; `errors` maps fields to messages, if any."""

    def __init__(self, detail: str, errors: Mapping[str, object] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def topic_list(names: list[str], *, limit: int) -> list[str]:
    """Valid, de-duplicated topics in order; raises InvalidTopic, or TooManyTopics past `limit`."""
    unique = list(dict.fromkeys(names))
    # Counted before validating: a list of a million names costs no more than one over the limit.
    check_topic_count(len(unique), limit)
    return [check_topic(name) for name in unique]


def connect_topics(values: list[str], *, limit: int) -> list[str]:
    """The topics of `GET /realtime/connect?topics=a,b&topics=c`."""
    return topic_list([name for value in values for name in value.split(",") if name], limit=limit)


def subscription(payload: object, *, limit: int) -> tuple[str, list[str], dict[str, Position]]:
    """(connection_id, topics, since) of a subscription POST or DELETE body.

    `since` (optional) maps some of the topics to the position the client has there, `"<epoch>:<offset>"`
    or `{"epoch", "offset"}` as its events carry them: it is sent what it missed since.
    """
    if not isinstance(payload, dict):
        raise Invalid(f"the body must be a JSON object: {SUBSCRIPTION_EXAMPLE}")
    connection_id = payload.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id or len(connection_id) > MAX_CONNECTION_ID_LENGTH:
        raise Invalid(
            "'connection_id' must be the id from the stream's 'connected' event",
            {"connection_id": ["the id from the stream's 'connected' event"]},
        )
    topics = payload.get("topics")
    if not isinstance(topics, list) or not topics or not all(isinstance(topic, str) for topic in topics):
        raise Invalid("'topics' must be a non-empty list of topic names", {"topics": ["a non-empty list of names"]})
    try:
        names = topic_list(topics, limit=limit)
    except InvalidTopic as exc:
        raise Invalid(str(exc), {"topics": [str(exc)]}) from None
    return connection_id, names, since_positions(payload.get("since"), names)


def since_positions(value: object, topics: list[str]) -> dict[str, Position]:
    """The `since` object of a subscription: {topic: position}, each topic one of `topics`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid("'since' must map topics to positions", {"since": ['{"video.1.likes": "<epoch>:<offset>"}']})
    wanted = set(topics)
    since = {}
    for topic, position in value.items():
        if topic not in wanted:
            raise Invalid(f"'since' names {str(topic)[:100]!r}, which is not in 'topics'", {"since": ["not in topics"]})
        try:
            since[topic] = parse_position(position)
        except InvalidPosition as exc:
            raise Invalid(f"'since' of {topic}: {exc}", {"since": [str(exc)]}) from None
    return since


def connect_since(values: list[str], last_event_id: str | None, topics: list[str]) -> dict[str, Position]:
    """Where a reconnecting stream resumes: `?since=<topic>:<epoch>:<offset>,...`, else the Last-Event-ID
    header that EventSource sends by itself (the position of the last event it saw, on one topic).

    Raises Invalid for a malformed `since`; an unreadable or foreign Last-Event-ID is ignored (a browser
    sends back whatever id it last saw, perhaps from another server).
    """
    items = [item for value in values for item in value.split(",") if item]
    if items:
        since = {}
        for item in items:
            try:
                topic, position = parse_event_id(item)
            except InvalidPosition as exc:
                raise Invalid(f"since {item[:120]!r}: {exc}") from None
            if topic not in topics:
                raise Invalid(f"since names {topic[:100]!r}, which is not in 'topics'")
            since[topic] = position
        return since
    if last_event_id:
        try:
            topic, position = parse_event_id(last_event_id)
        except InvalidPosition:
            return {}
        if topic in topics:
            return {topic: position}
    return {}


def publish(payload: object) -> list[tuple[str, str, object]]:
    """(topic, type, data) of `POST /api/publish`: one event, or a batch `{"events": [...]}` of at most 500.

    `data` is any JSON value, published as it came.
    """
    if isinstance(payload, dict) and "events" in payload:
        items = payload["events"]
        if not isinstance(items, list) or not items or len(items) > MAX_PUBLISH_BATCH:
            message = f"'events' must be a list of 1 to {MAX_PUBLISH_BATCH} events"
            raise Invalid(message, {"events": [message]})
        events: list[tuple[str, str, object]] = []
        errors: dict[str, object] = {}
        for index, item in enumerate(items):
            try:
                events.append(_event(item))
            except Invalid as exc:
                errors[str(index)] = exc.errors
        if errors:
            raise Invalid("some events are invalid: see 'errors' (by position in 'events')", {"events": errors})
        return events
    return [_event(payload)]


def _event(item: object) -> tuple[str, str, object]:
    if not isinstance(item, dict):
        raise Invalid(
            'an event must be a JSON object: {"topic": "...", "type": "...", "data": ...}',
            {"non_field_errors": ["expected an object with topic, type and data"]},
        )
    errors: dict[str, list[str]] = {}
    for field in ("topic", "type", "data"):
        if field not in item:
            errors[field] = ["this field is required"]
    if "topic" in item:
        try:
            check_topic(item["topic"])
        except InvalidTopic as exc:
            errors["topic"] = [str(exc)]
    if "type" in item:
        try:
            check_type(item["type"])
        except ReservedType:
            raise  # Not a malformed request but a forbidden one: the endpoint answers 403.
        except InvalidEvent as exc:
            errors["type"] = [str(exc)]
    if errors:
        first = next(iter(errors.items()))
        raise Invalid(f"'{first[0]}': {first[1][0]}", errors)
    return item["topic"], item["type"], item["data"]
