"""Per-topic history: positions given in the dispatch round, exact reads after a position, explicit gaps.

The same cases run on the embedded default's in-process history and on Redis (the round's Lua script), and
the Redis frames are checked byte for byte against the Python builder.
"""

import asyncio
import itertools
import json
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer
from channels_redis.core import RedisChannelLayer

from realtime import history
from realtime.dispatcher import Dispatcher
from realtime.events import encode_template, frame_at
from realtime.history import NO_EPOCH, InvalidPosition, Position, parse_event_id, parse_position
from realtime.hub import Connection
from realtime.sequencer import Sequencer
from realtime.servers.queued import QueuedWriter
from realtime.worker import Worker
from tests.clocks import FakeClock
from tests.realtime.test_hub import Recorder

_prefixes = itertools.count()


def _settings(size: int = 1000, secs: float = 300.0, exclude: str = "") -> history.Settings:
    import re

    return history.Settings(size=size, secs=secs, meta_secs=3600.0, exclude=re.compile(exclude) if exclude else None)


@pytest.fixture(params=["memory", "redis"])
def make_dispatcher(request: pytest.FixtureRequest) -> Any:
    """A factory of dispatchers over a fresh layer (a fresh Redis key prefix: nothing shared between tests)."""
    layers: list[Any] = []

    def make(settings: history.Settings | None = None, clock: Any = None) -> Dispatcher:
        if request.param == "memory":
            layer: Any = InMemoryChannelLayer(group_expiry=60)
        else:
            url = request.getfixturevalue("redis_url")
            layer = RedisChannelLayer(hosts=[url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
        layers.append(layer)
        return Dispatcher(layer, settings=settings or _settings(), clock=clock or FakeClock(1000.0))

    return make


async def _publish(dispatcher: Dispatcher, topic: str, *datas: object) -> None:
    await dispatcher.asend_events(
        [(topic, encode_template(f"{index}-n", topic, "t.x", data, 1.0)) for index, data in enumerate(datas)]
    )


async def _worker(dispatcher: Dispatcher, topic: str) -> tuple[str, Position | None]:
    channel = await dispatcher.anew_worker_channel()
    return channel, await dispatcher.aregister(topic, channel)


async def _round_for(layer: Any, channel: str, topic: str) -> tuple[str, int, list[bytes]]:
    """The next round `channel` receives, as (epoch, first offset, frames) of `topic`."""
    (row,) = (await layer.receive(channel))["events"]
    assert row[0] == topic
    return row[1], row[2], row[3]


async def test_events_get_increasing_offsets_and_the_frames_carry_them(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher()
    channel, joined = await _worker(dispatcher, "h.a")
    assert joined == Position(NO_EPOCH, 0)  # nothing published yet
    await _publish(dispatcher, "h.a", "one", "two")
    await _publish(dispatcher, "h.a", "three")
    messages = [await asyncio.wait_for(dispatcher.areceive(channel), 2) for _ in range(2)]
    rows = [row for message in messages for row in _rows(message)]
    epoch = rows[0][1]
    assert [(row[1], row[2], len(row[3])) for row in rows] == [(epoch, 1, 2), (epoch, 3, 1)]
    # The frame the workers get is the one frame_at builds: in Lua on Redis, in Python in memory.
    template = encode_template("0-n", "h.a", "t.x", "three", 1.0)
    assert rows[1][3][0] == frame_at(template, "h.a", epoch, 3)
    # A worker that joins now learns where the topic stands: it gets every later event and no earlier one.
    _, position = await _worker(dispatcher, "h.a")
    assert position == Position(epoch, 3)


def _data(frame: bytes) -> Any:
    """The `data` of an SSE event frame."""
    line = next(line for line in frame.split(b"\n") if line.startswith(b"data: "))
    return json.loads(line[len(b"data: ") :])["data"]


def _rows(message: dict[str, Any]) -> list[list[Any]]:
    if "events" in message:
        return [list(row) for row in message["events"]]
    return [[message["topic"], message["epoch"], message["first"], message["frames"]]]


async def test_a_read_after_a_position_gives_exactly_the_missed_events(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher()
    await _publish(dispatcher, "h.b", *range(5))
    head = (await dispatcher.aread_history({"h.b": Position(NO_EPOCH, 0)}))["h.b"]
    assert head.recovered
    assert len(head.frames) == 5
    epoch = head.head.epoch
    replay = (await dispatcher.aread_history({"h.b": Position(epoch, 2)}))["h.b"]
    assert replay.recovered
    assert replay.head == Position(epoch, 5)
    assert replay.frames == head.frames[2:]
    assert replay.first_offset == 3
    # Up to date: recovered, nothing to send.
    assert (await dispatcher.aread_history({"h.b": Position(epoch, 5)}))["h.b"].frames == []


@pytest.mark.parametrize(
    ("position", "why"),
    [
        (Position("other", 2), "another epoch (the history was lost since)"),
        (Position("EPOCH", 99), "an offset the topic never reached"),
        (Position("EPOCH", 1), "trimmed past the history's size"),
    ],
)
async def test_what_the_history_cannot_give_is_a_gap(make_dispatcher: Any, position: Position, why: str) -> None:
    dispatcher = make_dispatcher(_settings(size=3))
    await _publish(dispatcher, "h.c", *range(6))
    epoch = (await dispatcher.aread_history({"h.c": Position(NO_EPOCH, 0)}))["h.c"].head.epoch
    asked = Position(epoch if position.epoch == "EPOCH" else position.epoch, position.offset)
    replay = (await dispatcher.aread_history({"h.c": asked}))["h.c"]
    assert not replay.recovered, why
    assert replay.frames == []
    # From the oldest event still held, it resumes.
    assert (await dispatcher.aread_history({"h.c": Position(epoch, 3)}))["h.c"].recovered


async def test_events_older_than_the_age_limit_are_dropped(make_dispatcher: Any) -> None:
    clock = FakeClock(1000.0)
    dispatcher = make_dispatcher(_settings(secs=300), clock)
    await _publish(dispatcher, "h.d", "old")
    clock.now += 301
    await _publish(dispatcher, "h.d", "new")
    probe = (await dispatcher.aread_history({"h.d": Position(NO_EPOCH, 0)}))["h.d"]
    assert not probe.recovered  # the first event is gone
    epoch = probe.head.epoch
    replay = (await dispatcher.aread_history({"h.d": Position(epoch, 1)}))["h.d"]
    assert replay.recovered
    assert [b'"new"' in frame for frame in replay.frames] == [True]


async def test_an_excluded_topic_has_no_positions_and_no_history(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher(_settings(exclude=r"typing\..*"))
    channel, joined = await _worker(dispatcher, "typing.c1")
    assert joined is None
    await _publish(dispatcher, "typing.c1", "hi")
    [row] = _rows(await asyncio.wait_for(dispatcher.areceive(channel), 2))
    assert row[1:3] == ["", 0]
    assert b"id: " not in row[3][0]


async def test_control_frames_are_sent_as_they_are_without_history(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher()
    channel, _ = await _worker(dispatcher, "realtime-control")
    await dispatcher.asend_events([("realtime-control", b'{"member": 1}')])
    [row] = _rows(await asyncio.wait_for(dispatcher.areceive(channel), 2))
    assert row[1:] == ["", 0, [b'{"member": 1}']]


async def test_reads_of_the_same_position_at_once_share_one_history_read(make_dispatcher: Any) -> None:
    dispatcher = make_dispatcher()
    await _publish(dispatcher, "h.e", *range(3))
    since = {"h.e": Position(NO_EPOCH, 0)}
    replays = await asyncio.gather(*(dispatcher.aread_history(since) for _ in range(50)))
    assert all(replay["h.e"].frames == replays[0]["h.e"].frames for replay in replays)
    if dispatcher.memory is None:  # An in-process read never waits: nothing to share.
        assert dispatcher.stats["history_reads"] == 1
        assert dispatcher.stats["history_reads_shared"] == 49


async def test_a_redis_flush_starts_a_new_epoch(redis_url: str) -> None:
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
    dispatcher = Dispatcher(layer, settings=_settings())
    await _publish(dispatcher, "h.f", "a", "b")
    before = (await dispatcher.aread_history({"h.f": Position(NO_EPOCH, 0)}))["h.f"].head
    await layer.connection(0).flushall()
    await _publish(dispatcher, "h.f", "c")
    after = (await dispatcher.aread_history({"h.f": Position(NO_EPOCH, 0)}))["h.f"].head
    assert after.epoch != before.epoch
    assert after.offset == 1
    # Never old offsets read under the new epoch: the old position is a gap.
    assert not (await dispatcher.aread_history({"h.f": before}))["h.f"].recovered


async def test_offsets_given_by_another_redis_server_start_a_new_epoch(redis_url: str) -> None:
    """What a replica promoted by Sentinel holds: the old primary's meta hash, as far as it was replicated.

    The offsets after it may have been given and delivered already: a position the new server gives must not
    repeat one, so it starts a new epoch, and the worker that delivered the old offsets says `gap` and delivers.
    """
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
    dispatcher = Dispatcher(layer, settings=_settings())
    channel, joined = await _worker(dispatcher, "h.p")
    sequencer = Sequencer()
    sequencer.start("h.p", joined)
    await _publish(dispatcher, "h.p", "a", "b", "c")
    epoch, first, frames = await _round_for(layer, channel, "h.p")
    assert sequencer.admit("h.p", epoch, first, frames).offsets == [1, 2, 3]
    # The replica got offsets 1-2 only, from a server with another run_id.
    meta, events = history.redis_keys(layer.prefix, "h.p")
    connection = layer.connection(0)
    await connection.hset(meta, mapping={"seq": 2, "server": "0" * 40})
    await connection.rpop(events, 2)
    old = Position(epoch, 2)

    _, rejoined = await _worker(dispatcher, "h.p")
    assert rejoined is not None
    assert rejoined.epoch not in (NO_EPOCH, old.epoch), "the new server's epoch, at once"
    assert rejoined.offset == 0
    await _publish(dispatcher, "h.p", "d")
    epoch, first, frames = await _round_for(layer, channel, "h.p")
    assert epoch == rejoined.epoch
    assert first == 1
    release = sequencer.admit("h.p", epoch, first, frames)
    assert release.gap
    assert release.offsets == [1], "the new event is delivered, after the gap"
    assert not (await dispatcher.aread_history({"h.p": old}))["h.p"].recovered
    replay = (await dispatcher.aread_history({"h.p": Position(epoch, 0)}))["h.p"]
    assert replay.recovered
    assert len(replay.frames) == 1
    # Offsets this server gives keep the epoch.
    await _publish(dispatcher, "h.p", "e")
    assert (await _round_for(layer, channel, "h.p"))[:2] == (epoch, 2)


async def test_a_worker_that_missed_the_start_of_a_new_epoch_gets_it_after_the_gap(redis_url: str) -> None:
    """A worker cut off during a failover reads the history (its sweep) in the old epoch: it is told `gap`,
    then gets the new epoch's events from the first, rather than jumping past them."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
    dispatcher = Dispatcher(layer, settings=_settings())
    await _publish(dispatcher, "h.s", "a", "b")
    old = (await dispatcher.aread_history({"h.s": Position(NO_EPOCH, 0)}))["h.s"].head
    sequencer = Sequencer()
    sequencer.start("h.s", old)
    meta, _ = history.redis_keys(layer.prefix, "h.s")
    await layer.connection(0).hset(meta, "server", "0" * 40)  # a promoted replica
    await _publish(dispatcher, "h.s", "c", "d")

    replay = (await dispatcher.aread_history({"h.s": old}))["h.s"]
    assert not replay.recovered
    assert replay.head.epoch != old.epoch
    assert len(replay.frames) == 2
    release = sequencer.fill("h.s", old, replay)
    assert release.gap
    assert release.offsets == [1, 2]
    assert [_data(frame) for frame in release.frames] == ["c", "d"]
    assert sequencer.positions["h.s"] == replay.head


def test_the_memory_history_forgets_topics_idle_past_their_meta_age() -> None:
    clock = FakeClock(0.0)
    memory = history.MemoryHistory(history.Settings(10, 5.0, 60.0, None), clock=clock)
    memory.append("idle", [encode_template("1-n", "idle", "t.x", 1, 0.0)])
    clock.now = 61.0
    for index in range(1000):
        memory.append("busy", [encode_template(f"{index}-n", "busy", "t.x", 1, 0.0)])
    assert "idle" not in memory.topics
    assert memory.position("busy").offset == 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ab12:7", Position("ab12", 7)),
        ({"epoch": "ab12", "offset": 7}, Position("ab12", 7)),
        (":0", Position("", 0)),
    ],
)
def test_positions_parse(value: object, expected: Position) -> None:
    assert parse_position(value) == expected


@pytest.mark.parametrize(
    "value", ["ab12", "ab12:-1", "AB:1", ":3", "ab:1.5", {"epoch": "a", "offset": True}, 7, "a:" + "9" * 19, "a:\u0661"]
)
def test_bad_positions_are_refused(value: object) -> None:
    with pytest.raises(InvalidPosition):
        parse_position(value)


def test_an_sse_id_names_the_topic_and_its_position() -> None:
    assert parse_event_id("video.1.likes:ab12:7") == ("video.1.likes", Position("ab12", 7))
    for bad in ["", "ab12:7", "1700000000-dc1.ab"]:
        with pytest.raises(InvalidPosition):
            parse_event_id(bad)


def test_apps_declare_ephemeral_topics_beside_the_operators(settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "HISTORY_EXCLUDE": r"debug\..*"}
    history.declare_ephemeral(r"room\.[0-9]+\.typing")
    try:
        kept = history.settings()
        assert not kept.keeps("room.4.typing")
        assert not kept.keeps("debug.x")
        assert kept.keeps("room.4.messages")
    finally:
        history._ephemeral.remove(r"room\.[0-9]+\.typing")


async def test_a_stream_resumed_just_after_a_failover_gets_a_gap_then_the_new_epoch(redis_url: str) -> None:
    """The old primary gave offsets 1-10, the promoted replica holds 1-8; a client that had 8 reconnects to a
    worker that registers only now. It cannot be told it missed nothing: a gap, then every new event."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
    dispatcher = Dispatcher(layer, settings=_settings())
    await _publish(dispatcher, "h.r", *[f"e{n}" for n in range(1, 11)])
    meta, events = history.redis_keys(layer.prefix, "h.r")
    connection = layer.connection(0)
    old_epoch = (await connection.hget(meta, "epoch")).decode()
    await connection.hset(meta, mapping={"seq": 8, "server": "0" * 40})
    await connection.rpop(events, 4)
    worker = Worker(dispatcher, flush_secs=0.0)
    await worker.astart()
    try:
        recorder = Recorder()
        conn = Connection(worker.new_connection_id(), None, QueuedWriter(recorder, max_pending=1000))
        since = {"h.r": Position(old_epoch, 8)}
        await worker.aattach(conn, ["h.r"], since)
        assert await worker.aresume(conn, since) == ([], ["h.r"])
        await _publish(dispatcher, "h.r", "n1", "n2", "n3")
        async with asyncio.timeout(5):
            while b"n3" not in b"".join(recorder.bodies):
                recorder.arrived.clear()
                await recorder.arrived.wait()
        body = b"".join(recorder.bodies)
        assert body.count(b"event: gap") == 1
        assert body.index(b"event: gap") < body.index(b'"n1"') < body.index(b'"n2"') < body.index(b'"n3"')
    finally:
        await worker.astop()


async def test_positions_from_before_servers_were_recorded_are_taken_over(redis_url: str) -> None:
    """An upgrade: meta hashes without a server keep their epoch and offsets (no gap for every live topic)."""
    layer = RedisChannelLayer(hosts=[redis_url], prefix=f"hist{next(_prefixes)}", group_expiry=60)
    dispatcher = Dispatcher(layer, settings=_settings())
    await _publish(dispatcher, "h.u", "a", "b")
    meta, _ = history.redis_keys(layer.prefix, "h.u")
    await layer.connection(0).hdel(meta, "server")  # as the previous version wrote it
    before = (await dispatcher.aread_history({"h.u": Position(NO_EPOCH, 0)}))["h.u"].head
    assert before.offset == 2
    await _publish(dispatcher, "h.u", "c")
    replay = (await dispatcher.aread_history({"h.u": before}))["h.u"]
    assert replay.recovered
    assert replay.head == Position(before.epoch, 3)
    assert [_data(frame) for frame in replay.frames] == ["c"]
