"""publish()/apublish(): the only way into the fan-out from Python."""

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from asgiref.sync import async_to_sync

from realtime import conf, stores
from realtime.dispatcher import get_dispatcher
from realtime.events import Event, IdClock, InvalidEvent, check_type, encode_template, new_node_name
from realtime.peers import Forwarder, MemorySeen, PeerEvent, RedisSeen
from realtime.topics import check_topic

_clock: IdClock | None = None
_forwarder: Forwarder | None = None
_seen: stores.Slot[MemorySeen | RedisSeen] = stores.Slot(memory=MemorySeen, redis=RedisSeen)


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
    template = encode_template(event_id, topic, event_type, data, round(published_at, 6))
    limit = conf.get("MAX_EVENT_BYTES")
    if len(template) > limit:
        # Each subscriber's backlog holds up to MAX_PENDING_FRAMES of these: the limit bounds a worker's memory.
        raise InvalidEvent(
            f"the event is larger than REALTIME_MAX_EVENT_BYTES ({limit:,} bytes as an SSE frame): "
            "send a reference to the content (an id, a URL), not the content"
        )
    return Event(event_id, topic, event_type, data, published_at, id_clock().node, template)


def forwarder() -> Forwarder | None:
    """This event loop's forwarder to the peer data centres, or None when there are none."""
    global _forwarder
    peers = conf.get("PEERS")
    if not peers:
        return None
    loop = asyncio.get_running_loop()
    if _forwarder is None or _forwarder.loop not in (None, loop):
        _forwarder = Forwarder(
            peers,
            sender=conf.get("DATA_CENTER"),
            secret=conf.get("PEER_SECRET"),
            capacity=conf.get("PEER_QUEUE_CAPACITY"),
            timeout_secs=conf.get("PEER_TIMEOUT_SECS"),
        )
    return _forwarder


async def _dispatch(events: list[Event]) -> None:
    await get_dispatcher().asend_events([(event.topic, event.template) for event in events])
    links = forwarder()
    if links is not None:
        for event in events:
            links.forward(event)


async def apublish(topic: str, event_type: str, data: Any, *, now: float | None = None) -> Event:
    """Async: send an event to every subscriber of `topic` on every worker, and to every peer data centre.

    Returns the event (with its id). Call it after the data it announces is committed (services use
    transaction.on_commit). Raises InvalidTopic/InvalidEvent on bad input, DispatchUnavailable without Redis.
    """
    event = build_event(topic, event_type, data, now=now)
    await _dispatch([event])
    return event


async def apublish_many(items: Iterable[tuple[str, str, Any]]) -> list[Event]:
    """Async: validate every (topic, type, data) first, then publish them in order; all or nothing on bad input."""
    events = [build_event(topic, event_type, data) for topic, event_type, data in items]
    await _dispatch(events)
    return events


async def adeliver_from_peer(events: list[PeerEvent], *, now: float | None = None) -> int:
    """Async: deliver events forwarded by a peer data centre to local subscribers only, each id once.

    Never forwards them again: that is what keeps the full mesh free of loops. Returns how many were new.
    An id is remembered only once its event is handed to the workers: if that fails, the ids are forgotten
    again, so the sender's retry delivers them (instead of being answered "0 delivered").
    """
    seen = _seen.get()
    fresh = await seen.afirst_time([event.id for event in events], time.time() if now is None else now)
    fresh_events = [event for event, is_new in zip(events, fresh, strict=True) if is_new]
    try:
        await get_dispatcher().asend_events([(event.topic, event.template) for event in fresh_events])
    except BaseException:
        await seen.aforget([event.id for event in fresh_events])
        raise
    return len(fresh_events)


def publish(topic: str, event_type: str, data: Any) -> Event:
    """Sync twin of apublish, for views, services and on_commit callbacks."""
    return async_to_sync(apublish)(topic, event_type, data)


def publish_many(items: Iterable[tuple[str, str, Any]]) -> list[Event]:
    """Sync twin of apublish_many."""
    return async_to_sync(apublish_many)(list(items))
