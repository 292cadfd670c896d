"""The outbox between a worker's channel and its hub: merged writes under load, no wait when quiet."""

import asyncio

import pytest

from realtime.outbox import Outbox
from tests.clocks import FakeClock


class Recorder(list):
    """Every (topic, frames) the outbox delivered; `gate` holds a delivery until set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None

    async def __call__(self, topic: str, frames: list[bytes], offsets: list[int]) -> None:
        self.append((topic, list(frames)))
        if self.gate is not None:
            await self.gate.wait()


async def test_an_event_after_a_quiet_spell_goes_out_at_once() -> None:
    delivered, clock = Recorder(), FakeClock()
    outbox = Outbox(delivered, flush_secs=3600, clock=clock)
    await outbox.put("a", [b"1"])
    await outbox.flush()
    assert delivered == [("a", [b"1"])]
    clock.now += 3601
    await outbox.put("a", [b"2"])
    runner = asyncio.create_task(outbox.run())
    try:
        async with asyncio.timeout(1):
            while len(delivered) < 2:
                await asyncio.sleep(0)
    finally:
        runner.cancel()
    # Had it waited for the interval (an hour), the timeout would have fired.
    assert delivered[1] == ("a", [b"2"])


async def test_events_within_the_interval_go_out_together_per_topic_in_order() -> None:
    delivered, clock = Recorder(), FakeClock()
    outbox = Outbox(delivered, flush_secs=0.02, clock=clock)
    await outbox.put("a", [b"a1"])
    await outbox.flush()
    for topic, frame in [("a", b"a2"), ("b", b"b1"), ("a", b"a3"), ("b", b"b2"), ("a", b"a4")]:
        await outbox.put(topic, [frame])
    assert outbox.frames == 5
    await outbox.flush()
    assert delivered == [("a", [b"a1"]), ("a", [b"a2", b"a3", b"a4"]), ("b", [b"b1", b"b2"])]
    assert outbox.stats == {"flushes": 2, "flushed_frames": 6, "largest_flush": 5, "failed_deliveries": 0}
    assert outbox.frames == 0


async def test_the_runner_waits_out_the_interval_after_a_flush() -> None:
    delivered, clock = Recorder(), FakeClock()
    outbox = Outbox(delivered, flush_secs=0.05, clock=clock)
    runner = asyncio.create_task(outbox.run())
    try:
        await outbox.put("a", [b"1"])
        async with asyncio.timeout(1):
            while not delivered:
                await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await outbox.put("a", [b"2"])
        await outbox.put("a", [b"3"])
        async with asyncio.timeout(1):
            while len(delivered) < 2:
                await asyncio.sleep(0.001)
        # The injected clock stood still, so the runner slept the whole interval on the loop's clock.
        assert loop.time() - started >= 0.045
        assert delivered == [("a", [b"1"]), ("a", [b"2", b"3"])]
    finally:
        runner.cancel()


async def test_put_waits_while_the_outbox_is_full_and_loses_nothing() -> None:
    delivered, clock = Recorder(), FakeClock()
    outbox = Outbox(delivered, flush_secs=0.0, max_frames=3, clock=clock)
    for index in range(3):
        await outbox.put("a", [b"%d" % index])
    blocked = asyncio.create_task(outbox.put("a", [b"3"]))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await outbox.flush()
    await asyncio.wait_for(blocked, 1)
    await outbox.flush()
    assert [frame for _, frames in delivered for frame in frames] == [b"0", b"1", b"2", b"3"]


async def test_a_slow_fan_out_does_not_block_the_receive_side() -> None:
    delivered, clock = Recorder(), FakeClock()
    delivered.gate = asyncio.Event()
    outbox = Outbox(delivered, flush_secs=0.0, max_frames=2, clock=clock)
    await outbox.put("a", [b"1", b"2"])
    flushing = asyncio.create_task(outbox.flush())
    await asyncio.sleep(0)
    assert delivered == [("a", [b"1", b"2"])]
    # The batch is out of the outbox while it is being written: new events queue for the next flush.
    await asyncio.wait_for(outbox.put("a", [b"3"]), 1)
    delivered.gate.set()
    await flushing
    await outbox.flush()
    assert delivered[-1] == ("a", [b"3"])


@pytest.mark.parametrize("flush_secs", [0.0, 0.02])
async def test_an_empty_flush_delivers_nothing(flush_secs: float) -> None:
    delivered = Recorder()
    outbox = Outbox(delivered, flush_secs=flush_secs, clock=FakeClock())
    await outbox.flush()
    assert delivered == []
    assert outbox.stats["flushes"] == 0


async def test_a_failing_fan_out_costs_only_its_own_topic_and_the_outbox_goes_on() -> None:
    delivered = Recorder()

    async def deliver(topic: str, frames: list[bytes], offsets: list[int]) -> None:
        if topic == "broken":
            raise RuntimeError("a stream's write blew up")
        await delivered(topic, frames, offsets)

    outbox = Outbox(deliver, flush_secs=0.0, max_frames=2, clock=FakeClock())
    runner = asyncio.create_task(outbox.run())
    try:
        await outbox.put("broken", [b"1"])
        await outbox.put("fine", [b"2"])
        # More than max_frames in all: puts would block for good if the runner had died.
        async with asyncio.timeout(1):
            for frame in (b"3", b"4", b"5"):
                await outbox.put("fine", [frame])
            while sum(len(frames) for _, frames in delivered) < 4:
                await asyncio.sleep(0)
    finally:
        runner.cancel()
    assert [frame for _, frames in delivered for frame in frames] == [b"2", b"3", b"4", b"5"]
    assert outbox.stats["failed_deliveries"] == 1


async def test_put_also_waits_past_a_byte_bound() -> None:
    delivered = Recorder()
    outbox = Outbox(delivered, flush_secs=0.0, max_bytes=10, clock=FakeClock())
    await outbox.put("a", [b"x" * 10])
    blocked = asyncio.create_task(outbox.put("a", [b"y"]))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    await outbox.flush()
    await asyncio.wait_for(blocked, 1)
    assert outbox.bytes == 1
