"""The in-process fan-out and its bounded backlog, with a recording `send` instead of a server."""

from realtime.hub import Connection, Hub


class Recorder:
    def __init__(self):
        self.messages = []

    async def __call__(self, message):
        self.messages.append(message)

    @property
    def bodies(self):
        return [m["body"] for m in self.messages]


def make(conn_id, member=None, max_pending=3):
    recorder = Recorder()
    return Connection(conn_id, member, recorder, max_pending=max_pending), recorder


def test_first_and_last_subscribers_are_reported():
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


def test_members_count_devices():
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


async def test_fan_out_writes_the_same_frame_to_each_subscriber_only():
    hub = Hub()
    a, rec_a = make("a")
    b, rec_b = make("b")
    c, rec_c = make("c")
    for conn in (a, b, c):
        hub.add(conn)
    hub.subscribe(a, ["t"])
    hub.subscribe(b, ["t"])
    hub.subscribe(c, ["other"])
    assert await hub.fan_out("t", b"frame") == 2
    assert rec_a.bodies == [b"frame"]
    assert rec_b.bodies == [b"frame"]
    assert rec_c.bodies == []
    assert await hub.fan_out("nobody", b"x") == 0


async def test_a_paused_stream_buffers_then_flushes_in_order():
    hub = Hub()
    a, rec = make("a", max_pending=3)
    hub.add(a)
    hub.subscribe(a, ["t"])
    a.pause()
    for n in range(3):
        await hub.fan_out("t", b"%d" % n)
    assert rec.bodies == []
    await a.resume()
    assert rec.bodies == [b"0", b"1", b"2"]


async def test_a_stalled_stream_is_closed_with_a_reset_frame_past_its_backlog():
    hub = Hub()
    slow, rec_slow = make("slow", max_pending=2)
    fast, rec_fast = make("fast", max_pending=2)
    for conn in (slow, fast):
        hub.add(conn)
        hub.subscribe(conn, ["t"])
    slow.pause()
    for n in range(4):
        await hub.fan_out("t", b"%d" % n)
    assert slow.closed
    assert rec_slow.bodies[0].startswith(b"event: reset")
    assert rec_slow.messages[-1]["more_body"] is False
    assert hub.stats["overflow_closed"] == 1
    assert rec_fast.bodies == [b"0", b"1", b"2", b"3"]


async def test_the_backlog_counts_events_not_writes():
    hub = Hub()
    slow, rec = make("slow", max_pending=5)
    hub.add(slow)
    hub.subscribe(slow, ["t"])
    slow.pause()
    await hub.fan_out("t", b"three events", frames=3)
    assert not slow.closed
    await hub.fan_out("t", b"three more", frames=3)
    assert slow.closed
    assert rec.bodies[0].startswith(b"event: reset")
