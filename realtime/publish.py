"""publish()/apublish(): the only way into the fan-out from Python."""

import time
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from realtime import conf
from realtime.dispatcher import get_dispatcher
from realtime.events import Event, IdClock, check_type, encode_frame, new_node_name
from realtime.topics import check_topic

_clock: IdClock | None = None


def id_clock() -> IdClock:
    """This process's event-id clock, named after its data centre so ids never collide across them."""
    global _clock
    if _clock is None:
        _clock = IdClock(new_node_name(conf.get("DATA_CENTER")))
    return _clock


def build_event(topic: str, event_type: str, data: Any, *, now: float | None = None) -> Event:
    """Validate and encode an event once; raises InvalidTopic or InvalidEvent. Pure but for the id clock."""
    check_topic(topic)
    check_type(event_type)
    published_at = time.time() if now is None else now
    event_id = id_clock().next_id(published_at)
    frame = encode_frame(event_id, topic, event_type, data, round(published_at, 6))
    return Event(event_id, topic, event_type, data, published_at, id_clock().node, frame)


async def apublish(topic: str, event_type: str, data: Any, *, now: float | None = None) -> Event:
    """Async: send an event to every subscriber of `topic` on every worker; returns it (with its id).

    Call it after the data it announces is committed (services use transaction.on_commit).
    """
    event = build_event(topic, event_type, data, now=now)
    await get_dispatcher().asend_event(event.topic, event.frame)
    return event


async def apublish_many(items: Iterable[tuple[str, str, Any]]) -> list[Event]:
    """Async: validate every (topic, type, data) first, then publish them in order; all or nothing on bad input."""
    events = [build_event(topic, event_type, data) for topic, event_type, data in items]
    dispatcher = get_dispatcher()
    for event in events:
        await dispatcher.asend_event(event.topic, event.frame)
    return events


def publish(topic: str, event_type: str, data: Any) -> Event:
    """Sync twin of apublish, for views, services and on_commit callbacks."""
    return async_to_sync(apublish)(topic, event_type, data)


def publish_many(items: Iterable[tuple[str, str, Any]]) -> list[Event]:
    """Sync twin of apublish_many."""
    return async_to_sync(apublish_many)(list(items))
