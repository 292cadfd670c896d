"""The single-event publish path's batching: rounds per tick, one script for a round's worker messages, messages
received in batches, and the body deadline kept by one sweeper per loop."""

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from realtime import http
from realtime.dispatcher import EVENTS, Dispatcher
from realtime.events import encode_template

_prefixes = itertools.count()


@pytest.fixture
def make_layer(redis_url: str) -> Any:
    def make(**config: Any) -> RedisChannelLayer:
        return RedisChannelLayer(hosts=[redis_url], prefix=f"rounds{next(_prefixes)}", group_expiry=60, **config)

    return make


def _event(topic: str, seq: int) -> tuple[str, Any]:
    return topic, encode_template(f"{seq}-n", topic, "t.x", {"seq": seq}, 1.0)


async def test_publishes_arriving_within_a_tick_share_one_round(make_layer: Any) -> None:
    dispatcher = Dispatcher(make_layer(), round_secs=0.2)
    channel = await dispatcher.anew_worker_channel()
    for topic in ("r.a", "r.b", "r.c"):
        await dispatcher.aregister(topic, channel)
    await dispatcher.asend_events([_event("r.a", 0)])  # after a quiet spell: at once
    assert dispatcher.stats["lookups"] == 1
    publishers = []
    for topic in ("r.a", "r.b", "r.c"):  # arriving 20 ms apart, within one tick: without it, three rounds
        publishers.append(asyncio.ensure_future(dispatcher.asend_events([_event(topic, 1)])))
        await asyncio.sleep(0.02)
    await asyncio.gather(*publishers)
    assert dispatcher.stats["lookups"] == 2  # three publishers, one round
    assert dispatcher.stats["worker_messages"] == 2
    first = await asyncio.wait_for(dispatcher.areceive(channel), 2)
    assert [row[0] for row in first["events"]] == ["r.a"]
    second = await asyncio.wait_for(dispatcher.areceive(channel), 2)
    assert second["type"] == EVENTS
    assert [row[0] for row in second["events"]] == ["r.a", "r.b", "r.c"]


async def test_a_full_worker_channel_loses_that_workers_round_only(make_layer: Any, redis_url: str) -> None:
    publisher = make_layer(capacity=1)
    # Another process on the same Redis (a layer has one key for all its channels: capacity is per process).
    other = RedisChannelLayer(hosts=[redis_url], prefix=publisher.prefix, group_expiry=60, capacity=1)
    dispatcher, receiver = Dispatcher(publisher, round_secs=0), Dispatcher(other)
    full, fine = await dispatcher.anew_worker_channel(), await receiver.anew_worker_channel()
    for channel in (full, fine):
        await dispatcher.aregister("r.full", channel)
    await dispatcher.asend_events([_event("r.full", 0)])
    assert await asyncio.wait_for(receiver.areceive(fine), 2)  # `full` leaves its message unread
    await dispatcher.asend_events([_event("r.full", 1)])
    assert dispatcher.stats["dropped_worker_full"] == 1
    assert dispatcher.stats["failed_worker_sends"] == 0
    message = await asyncio.wait_for(receiver.areceive(fine), 2)
    assert message["events"][0][2] == 2  # the second event's offset: `fine` got both


async def test_each_channel_of_a_process_gets_its_own_messages(make_layer: Any) -> None:
    layer = make_layer()
    dispatcher = Dispatcher(layer)
    one, two = await dispatcher.anew_worker_channel(), await dispatcher.anew_worker_channel()
    await layer.send(one, {"type": "rt.reply", "to": "one"})
    await layer.send(two, {"type": "rt.reply", "to": "two"})
    assert await asyncio.wait_for(dispatcher.areceive(two), 2) == {"type": "rt.reply", "to": "two"}
    assert await asyncio.wait_for(dispatcher.areceive(one), 2) == {"type": "rt.reply", "to": "one"}


@pytest.fixture(params=["redis-7", "redis-before-7"])
def bzmpop_asked(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Receives on Redis >= 7 (one BZMPOP), and on an older one: BZMPOP is unknown there, which the first receive
    finds out (once: every receive then uses ZPOPMIN + BZPOPMIN)."""
    refused: list[str] = []
    if request.param == "redis-before-7":

        async def unknown(*args: Any, **kwargs: Any) -> None:
            refused.append("bzmpop")
            raise ResponseError("unknown command 'BZMPOP', with args beginning with: ")

        monkeypatch.setattr(Redis, "bzmpop", unknown)
    yield
    assert refused == (["bzmpop"] if request.param == "redis-before-7" else [])


async def test_messages_sent_by_the_layer_itself_are_received_in_order(make_layer: Any, bzmpop_asked: None) -> None:
    layer = make_layer()
    dispatcher = Dispatcher(layer)
    channel = await dispatcher.anew_worker_channel()
    for seq in range(5):
        await layer.send(channel, {"type": "rt.reply", "seq": seq})
    received = [await asyncio.wait_for(dispatcher.areceive(channel), 2) for _ in range(5)]
    assert received == [{"type": "rt.reply", "seq": seq} for seq in range(5)]


async def test_a_receive_waits_for_a_message_that_comes_later(make_layer: Any, bzmpop_asked: None) -> None:
    layer = make_layer()
    dispatcher = Dispatcher(layer)
    channel = await dispatcher.anew_worker_channel()
    waiting = asyncio.ensure_future(dispatcher.areceive(channel))
    await asyncio.sleep(0.05)  # let it block in Redis: the message below must wake it, not be found at once
    assert not waiting.done()
    await layer.send(channel, {"type": "rt.reply", "seq": 1})
    assert await asyncio.wait_for(waiting, 3) == {"type": "rt.reply", "seq": 1}


async def test_a_body_slower_than_its_deadline_is_refused_with_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http._Deadlines, "SWEEP_SECS", 0.02)
    never = asyncio.Event()

    async def trickle() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    request = http.Request({"method": "POST", "path": "/api/publish", "headers": []})
    with pytest.raises(http.HttpError) as refused:
        await asyncio.wait_for(http.aread_body(request, trickle, 1000, deadline_secs=0.05), 2)
    assert (refused.value.status, refused.value.code) == (408, "request_timeout")
    assert (b"connection", b"close") in refused.value.headers
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_body_in_time_is_read_and_other_cancellations_go_through(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http._Deadlines, "SWEEP_SECS", 0.02)
    parts = iter([{"type": "http.request", "body": b"ab", "more_body": True}, {"type": "http.request", "body": b"c"}])

    async def receive() -> dict[str, Any]:
        return next(parts)

    request = http.Request({"method": "POST", "path": "/api/publish", "headers": []})
    assert await http.aread_body(request, receive, 1000) == b"abc"

    async def stalled() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reader = asyncio.ensure_future(http.aread_body(request, stalled, 1000))
    await asyncio.sleep(0.01)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
