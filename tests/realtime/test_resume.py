"""A real Worker resuming streams from the history: every missed event once, in order, then the live ones.

In process (the in-memory layer and history), so the window between joining a topic and reading its history
can be driven exactly: events are published inside it.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from realtime import history
from realtime.dispatcher import Dispatcher
from realtime.events import encode_template
from realtime.history import NO_EPOCH, Position
from realtime.hub import Connection
from realtime.servers.queued import QueuedWriter
from realtime.worker import Worker
from tests.realtime.test_hub import Recorder

_ID = re.compile(rb"^id: ([^\n]*)$", re.MULTILINE)
_EVENT = re.compile(rb"^event: ([^\n]*)$", re.MULTILINE)


@pytest.fixture
async def worker(settings: Any) -> AsyncIterator[Worker]:
    settings.REALTIME = {**settings.REALTIME, "OPEN_NAMESPACES": ["r"]}
    kept = history.Settings(size=100, secs=300.0, meta_secs=3600.0, exclude=None)
    dispatcher = Dispatcher(InMemoryChannelLayer(group_expiry=60), settings=kept)
    worker = Worker(dispatcher, flush_secs=0.0)
    await worker.astart()
    yield worker
    await worker.astop()


async def publish(worker: Worker, topic: str, count: int) -> None:
    await worker.dispatcher.asend_events(
        [(topic, encode_template(f"{n}-t", topic, "t.x", n, 0.0)) for n in range(count)]
    )


def stream(recorder: Recorder) -> list[tuple[str, str]]:
    """(event, id) of every frame written, in order."""
    data = b"".join(recorder.bodies)
    out = []
    for frame in data.split(b"\n\n"):
        event = _EVENT.search(frame)
        if event:
            found = _ID.search(frame)
            out.append((event.group(1).decode(), found.group(1).decode() if found else ""))
    return out


def offsets(recorder: Recorder, topic: str) -> list[int]:
    return [int(tag.rsplit(":", 1)[1]) for event, tag in stream(recorder) if tag.startswith(topic + ":")]


async def wait_for_offset(recorder: Recorder, topic: str, offset: int) -> None:
    async with asyncio.timeout(2):
        while offset not in offsets(recorder, topic):
            recorder.arrived.clear()
            await recorder.arrived.wait()


async def received(worker: Worker, count: int) -> None:
    """Until the worker has taken `count` events off its channel (into its outbox and streams)."""
    async with asyncio.timeout(2):
        while worker.stats["received_events"] < count:
            await asyncio.sleep(0)


def connect(worker: Worker) -> tuple[Connection, Recorder]:
    recorder = Recorder()
    return Connection(worker.new_connection_id(), None, QueuedWriter(recorder, max_pending=1000)), recorder


async def test_events_published_while_a_stream_resumes_reach_it_exactly_once(worker: Worker, monkeypatch: Any) -> None:
    await publish(worker, "r.a", 5)
    epoch = worker.dispatcher.memory.epoch  # type: ignore[union-attr]
    real_read = worker.dispatcher.aread_history

    async def read_in_the_window(since: dict[str, Position]) -> dict[str, history.Replay]:
        # After the worker joined the topic, before and after the history is read: both paths see these.
        await publish(worker, "r.a", 2)
        await received(worker, 2)
        replays = await real_read(since)
        await publish(worker, "r.a", 1)
        await received(worker, 3)
        return replays

    monkeypatch.setattr(worker.dispatcher, "aread_history", read_in_the_window)
    conn, recorder = connect(worker)
    since = {"r.a": Position(epoch, 2)}
    await worker.aattach(conn, ["r.a"], since)
    assert await worker.aresume(conn, since) == (["r.a"], [])
    await publish(worker, "r.a", 1)
    await wait_for_offset(recorder, "r.a", 9)
    assert offsets(recorder, "r.a") == [3, 4, 5, 6, 7, 8, 9]


async def test_a_position_the_history_cannot_serve_is_one_gap_frame_then_live_events(worker: Worker) -> None:
    await publish(worker, "r.b", 3)
    conn, recorder = connect(worker)
    since = {"r.b": Position("lostepoch", 2), "r.c": Position(NO_EPOCH, 0)}
    await worker.aattach(conn, ["r.b", "r.c"], since)
    assert await worker.aresume(conn, since) == (["r.c"], ["r.b"])
    await publish(worker, "r.b", 1)
    await wait_for_offset(recorder, "r.b", 4)
    assert stream(recorder)[0] == ("gap", "")
    assert b'{"topics":["r.b"]}' in recorder.bodies[0]
    assert offsets(recorder, "r.b") == [4]


async def test_a_subscription_with_since_resumes_and_says_so(worker: Worker) -> None:
    await publish(worker, "r.d", 4)
    conn, recorder = connect(worker)
    await worker.aattach(conn, ["r.e"])
    epoch = worker.dispatcher.memory.epoch  # type: ignore[union-attr]
    reply = await worker.achange(conn.id, "subscribe", ["r.d", "r.f"], None, {"r.d": Position(epoch, 1)})
    assert reply["recovered"] == ["r.d"]
    assert reply["gaps"] == []
    # Where the topic subscribed without `since` stands: what to send back after a reconnect.
    assert reply["positions"] == {"r.f": ":0"}
    await wait_for_offset(recorder, "r.d", 4)
    assert offsets(recorder, "r.d") == [2, 3, 4]


async def test_a_worker_that_missed_a_round_fills_it_from_the_history(worker: Worker) -> None:
    conn, recorder = connect(worker)
    await worker.aattach(conn, ["r.g"])
    await publish(worker, "r.g", 1)
    await wait_for_offset(recorder, "r.g", 1)
    # A round lost on its way to this worker (a full channel, Redis restarting): only the history has it.
    layer: Any = worker.dispatcher.layer
    groups = layer.groups.pop("r.g")
    await publish(worker, "r.g", 2)
    layer.groups["r.g"] = groups
    await publish(worker, "r.g", 1)
    await wait_for_offset(recorder, "r.g", 4)
    assert offsets(recorder, "r.g") == [1, 2, 3, 4]
    # The history read gives 2, 3 and the 4 that was held behind them (held copy dropped).
    assert worker.sequencer.stats["filled_events"] == 3
    assert [event for event, _ in stream(recorder)].count("gap") == 0


async def test_an_event_the_history_gave_before_the_worker_received_it_is_not_sent_twice(worker: Worker) -> None:
    # A round reaches the history before its message reaches the workers: a resume can read an event that this
    # worker is still to receive.
    await publish(worker, "r.h", 2)
    layer: Any = worker.dispatcher.layer
    held: list[tuple[str, dict]] = []
    real_send = layer.group_send

    async def late(group: str, message: dict) -> None:
        held.append((group, message))

    conn, recorder = connect(worker)
    epoch = worker.dispatcher.memory.epoch  # type: ignore[union-attr]
    since = {"r.h": Position(epoch, 1)}
    await worker.aattach(conn, ["r.h"], since)
    layer.group_send = late
    await publish(worker, "r.h", 1)  # offset 3: in the history, its message held back
    layer.group_send = real_send
    assert await worker.aresume(conn, since) == (["r.h"], [])
    for group, message in held:
        await real_send(group, message)
    await publish(worker, "r.h", 1)
    await wait_for_offset(recorder, "r.h", 4)
    assert offsets(recorder, "r.h") == [2, 3, 4]


async def test_topics_revoked_for_a_member_leave_her_streams_at_once_and_say_so(worker: Worker) -> None:
    recorder = Recorder()
    mine = Connection(worker.new_connection_id(), 7, QueuedWriter(recorder, max_pending=1000))
    other, other_recorder = connect(worker)
    await worker.aattach(mine, ["r.kept", "r.secret"])
    await worker.aattach(other, ["r.secret"])
    worker._revoke(b'{"member": 7, "topics": ["r.secret"], "reason": "removed_from_conversation"}')
    assert mine.topics == {"r.kept"}
    assert not mine.closed
    await publish(worker, "r.secret", 1)
    await publish(worker, "r.kept", 1)
    await wait_for_offset(recorder, "r.kept", 1)
    await wait_for_offset(other_recorder, "r.secret", 1)  # another member's stream keeps it
    assert [event for event, _ in stream(recorder)] == ["unsubscribed", "t.x"]
    assert b'"topics":["r.secret"],"reason":"removed_from_conversation"' in recorder.bodies[0]
    assert offsets(recorder, "r.secret") == []
    assert worker.stats["revoked_topic_streams"] == 1
