"""The in-process fan-out and its bounded backlog, through the generic queued writer and a `send` we control.

A `send` that blocks is what uvicorn's does for a reader that stopped reading: the fan-out must never wait for it.
"""

import asyncio

from realtime.hub import Connection, Hub, Payload
from realtime.servers.queued import QueuedWriter


class Recorder:
    """An ASGI `send` that records what it is given; `stall()` makes it block like an undrained socket."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.arrived = asyncio.Event()

    async def __call__(self, message: dict) -> None:
        await self.flowing.wait()
        self.messages.append(message)
        self.arrived.set()

    def stall(self) -> None:
        self.flowing.clear()

    @property
    def bodies(self) -> list[bytes]:
        return [m["body"] for m in self.messages if m["body"]]

    async def settle(self) -> None:
        for _ in range(10):
            await asyncio.sleep(0)


def make(conn_id: str, member: int | None = None, max_pending: int = 3) -> tuple[Connection, Recorder]:
    recorder = Recorder()
    return Connection(conn_id, member, QueuedWriter(recorder, max_pending=max_pending)), recorder


async def test_first_and_last_subscribers_are_reported() -> None:
    hub = Hub()
    a, _ = make("a")
    b, _ = make("b")
    hub.add(a)
    hub.add(b)
    assert hub.subscribe(a, ["t1", "t2"]) == ["t1", "t2"]
    assert hub.subscribe(b, ["t1"]) == []
    assert hub.unsubscribe(a, ["t1"]) == []
    assert hub.remove(b) == ["t1"]
    assert hub.remove(a) == ["t2"]
    assert hub.topics == {}
    assert hub.connections == {}
    assert hub.writers == {"queued": 2}


async def test_members_count_devices() -> None:
    hub = Hub()
    a, _ = make("a", member=7)
    b, _ = make("b", member=7)
    hub.add(a)
    hub.add(b)
    assert hub.members == {7: 2}
    hub.remove(a)
    assert hub.members == {7: 1}
    hub.remove(b)
    assert hub.members == {}


async def test_fan_out_writes_the_same_frame_to_each_subscriber_only() -> None:
    hub = Hub()
    a, rec_a = make("a")
    b, rec_b = make("b")
    c, rec_c = make("c")
    for conn in (a, b, c):
        hub.add(conn)
    hub.subscribe(a, ["t"])
    hub.subscribe(b, ["t"])
    hub.subscribe(c, ["other"])
    assert await hub.fan_out("t", [b"frame"]) == 2
    await rec_a.settle()
    assert rec_a.bodies == [b"frame"]
    assert rec_b.bodies == [b"frame"]
    assert rec_c.bodies == []
    assert await hub.fan_out("nobody", [b"x"]) == 0


async def test_a_stalled_stream_buffers_then_flushes_in_order() -> None:
    hub = Hub()
    a, rec = make("a", max_pending=3)
    hub.add(a)
    hub.subscribe(a, ["t"])
    rec.stall()
    await rec.settle()
    for n in range(3):
        await hub.fan_out("t", [b"%d" % n])
    assert rec.bodies == []
    rec.flowing.set()
    await rec.settle()
    assert rec.bodies == [b"0", b"1", b"2"]


async def test_a_stalled_reader_never_delays_the_others_and_is_reset_past_its_backlog() -> None:
    hub = Hub()
    slow, rec_slow = make("slow", max_pending=2)
    fast, rec_fast = make("fast", max_pending=2)
    for conn in (slow, fast):
        hub.add(conn)
        hub.subscribe(conn, ["t"])
    rec_slow.stall()
    for n in range(4):
        # Bounded: a fan-out that awaited the stalled socket would never return.
        await asyncio.wait_for(hub.fan_out("t", [b"%d" % n]), 1)
        await rec_fast.settle()
    assert slow.closed
    assert hub.stats["overflow_closed"] == 1
    assert rec_fast.bodies == [b"0", b"1", b"2", b"3"]
    # Once the socket drains, the reader finds the reset frame and the end of the response.
    rec_slow.flowing.set()
    await rec_slow.settle()
    assert rec_slow.bodies[-1].startswith(b"event: reset")
    assert rec_slow.messages[-1]["more_body"] is False


async def test_the_backlog_counts_events_not_writes() -> None:
    hub = Hub()
    slow, rec = make("slow", max_pending=5)
    hub.add(slow)
    hub.subscribe(slow, ["t"])
    rec.stall()
    await rec.settle()
    await hub.fan_out("t", [b"one", b"two", b"three"])
    assert not slow.closed
    await hub.fan_out("t", [b"four", b"five", b"six"])
    assert slow.closed


async def test_a_keep_alive_goes_only_to_streams_without_an_event_since_the_previous_round() -> None:
    hub = Hub()
    busy, rec_busy = make("busy", max_pending=10)
    quiet, rec_quiet = make("quiet", max_pending=10)
    for conn, topic in ((busy, "hot"), (quiet, "cold")):
        hub.add(conn)
        hub.subscribe(conn, [topic])
    await hub.write_all(b":\n\n")  # the first round: nothing fanned out before it
    await hub.fan_out("hot", [b"event"])
    await hub.write_all(b":\n\n")  # the event stands for this round's keep-alive on `hot`
    await hub.write_all(b":\n\n")  # no event since the previous round: both get one
    await rec_busy.settle()
    await rec_quiet.settle()
    assert rec_busy.bodies == [b":\n\n", b"event", b":\n\n"]
    assert rec_quiet.bodies == [b":\n\n", b":\n\n", b":\n\n"]
    assert hub.stats["keepalives_skipped"] == 1
    assert hub.fanned_out == {}  # forgotten once quiet: the map holds only topics active since the last round


async def test_keep_alive_rounds_visit_one_slice_each_and_every_stream_once_per_cycle() -> None:
    hub = Hub(keepalive_slices=3)
    streams = {f"c{i}": make(f"c{i}", max_pending=50) for i in range(30)}
    for conn, _ in streams.values():
        hub.add(conn)
        hub.subscribe(conn, [f"topic-{conn.id}"])
    assert sorted(len(part) for part in hub.keepalive_slices) != [0, 0, 30]  # dealt, not all in one
    assert sum(len(part) for part in hub.keepalive_slices) == 30
    for _ in range(6):  # two whole cycles, quiet
        await hub.write_all(b":\n\n")
    for conn, recorder in streams.values():
        await recorder.settle()
        assert recorder.bodies == [b":\n\n", b":\n\n"], conn.id

    # An event on a stream's topic at any point since its slice's previous round stands for its keep-alive.
    busy, busy_recorder = streams["c0"]
    slice_of_busy = next(i for i, part in enumerate(hub.keepalive_slices) if busy in part)
    while hub.keepalive_round % 3 != (slice_of_busy + 1) % 3:
        await hub.write_all(b":\n\n")  # up to just after its slice's round
    await hub.fan_out("topic-c0", [b"event"])
    for _ in range(3):  # the next cycle: every slice once, the busy stream's included
        await hub.write_all(b":\n\n")
    await busy_recorder.settle()
    assert busy_recorder.bodies[-1] == b"event"
    assert hub.stats["keepalives_skipped"] == 1
    for _ in range(3):  # a quiet cycle: it gets one again, and its topic is forgotten
        await hub.write_all(b":\n\n")
    await busy_recorder.settle()
    assert busy_recorder.bodies[-1] == b":\n\n"
    assert hub.fanned_out == {}

    hub.remove(busy)
    assert all(busy not in part for part in hub.keepalive_slices)


class ListWriter:
    """A writer that appends what it takes to a log shared with the test (no socket, no queue)."""

    kind = "list"

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def write(self, payload: Payload) -> bool:
        self.log.append(self.name)
        return True

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        pass

    async def aended(self) -> None:
        pass


async def test_a_fan_out_reaches_each_stream_once_and_lets_the_loop_run_between_batches() -> None:
    hub = Hub()
    log: list[str] = []
    for index in range(7):
        conn = Connection(f"c{index}", None, ListWriter(log, "write"))
        hub.add(conn)
        hub.subscribe(conn, ["t"])
    fan_out = asyncio.ensure_future(hub.fan_out("t", [b"frame"], yield_every=3))
    await asyncio.sleep(0)  # the fan-out starts, writes its first batch, and yields
    log.append("other work")
    assert await fan_out == 7
    assert log == ["write"] * 3 + ["other work"] + ["write"] * 4
