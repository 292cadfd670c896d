"""Delivery guarantees across reconnects, with real Daphne workers, real Redis and a real HTTP/SSE client.

A client that says where it was (the `Last-Event-ID` an EventSource sends by itself, `?since=` or a
subscription's `since`) gets every accepted event it missed exactly once, in per-topic order, or an explicit
`gap` frame for the topics nobody can resume: never a silent loss.
"""

import asyncio
import contextlib

import pytest
import redis.asyncio as aioredis

from tests.system.harness import Frame, SSEClient, Worker, publish, subscribe

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]


class Steady:
    """Publishes `count` events on `topics` (round robin), one per `interval` seconds, through one worker;
    remembers the ids answered 202, per topic, in publish order."""

    def __init__(self, url: str, token: str, topics: list[str], count: int, interval: float = 0.05) -> None:
        self.url, self.token, self.topics, self.count, self.interval = url, token, topics, count, interval
        self.accepted: dict[str, list[str]] = {topic: [] for topic in topics}
        self.sent = asyncio.Event()  # set after each accepted event
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        for n in range(self.count):
            topic = self.topics[n % len(self.topics)]
            response = await publish(self.url, self.token, topic, "news.posted", {"n": n})
            assert response.status_code == 202, response.text
            self.accepted[topic].extend(response.json()["ids"])
            self.sent.set()
            await asyncio.sleep(self.interval)  # the rate itself, not a wait for something

    def total(self) -> int:
        return sum(len(ids) for ids in self.accepted.values())

    async def reach(self, count: int) -> None:
        while self.total() < count:
            self.sent.clear()
            await asyncio.wait_for(self.sent.wait(), 10)


async def drain(client: SSEClient, got: dict[str, list[Frame]], until: int, gaps: list[Frame]) -> None:
    """Read events into `got` (per topic) until `until` events in all, or the stream ends."""
    while sum(len(frames) for frames in got.values()) < until:
        try:
            frame = await client.next_frame(timeout=0.5)
        except TimeoutError:
            if client.closed.is_set() and client.frames.empty():
                return
            continue
        if frame.event == "gap":
            gaps.append(frame)
        elif frame.event == "news.posted":
            got.setdefault(frame.json()["topic"], []).append(frame)


async def kill_mid_stream(
    holder: Worker, client: SSEClient, steady: Steady, got: dict[str, list[Frame]], gaps: list[Frame]
) -> None:
    """Start publishing, SIGKILL the worker holding `client` after 10 events, read what reached the client, and
    let 10 more events be accepted while it is away (its reconnect delay)."""
    try:
        steady.task = asyncio.create_task(steady.run())
        await steady.reach(10)
        holder.kill()
        await drain(client, got, until=10**6, gaps=gaps)
    finally:
        await client.close()
    await steady.reach(20)


def check_exactly_once(got: dict[str, list[Frame]], accepted: dict[str, list[str]]) -> None:
    for topic, ids in accepted.items():
        frames = got.get(topic, [])
        assert [frame.event_id for frame in frames] == ids, (topic, [frame.id for frame in frames])
        offsets = [frame.json()["offset"] for frame in frames]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))


async def test_a_sigkilled_workers_stream_resumes_on_another_worker_with_last_event_id(
    redis_server, start_worker, tokens
):
    one = start_worker(redis_server.url, name="one")
    two = start_worker(redis_server.url, name="two")
    topic = "news.resume.one"
    steady = Steady(two.url, tokens["admin"], [topic], count=60)
    got: dict[str, list[Frame]] = {}
    gaps: list[Frame] = []
    first = SSEClient(one.url, topics=[topic])
    await first.connect()
    await kill_mid_stream(one, first, steady, got, gaps)
    last = got[topic][-1].id
    assert last is not None
    assert last.startswith(topic + ":")
    # What a third-party EventSource does: the same URL, on another worker, with the last id it saw.
    second = SSEClient(two.url, topics=[topic], headers={"Last-Event-ID": last})
    await second.connect()
    try:
        await steady.task
        await drain(second, got, until=steady.total(), gaps=gaps)
    finally:
        await second.close()
    assert gaps == []
    check_exactly_once(got, steady.accepted)


async def test_a_multi_topic_stream_resumes_every_topic_through_since(redis_server, start_worker, tokens):
    one = start_worker(redis_server.url, name="one")
    two = start_worker(redis_server.url, name="two")
    topics = ["news.multi.a", "news.multi.b", "news.multi.c"]
    steady = Steady(two.url, tokens["admin"], topics, count=60)
    got: dict[str, list[Frame]] = {}
    gaps: list[Frame] = []
    first = SSEClient(one.url)
    hello = await first.connect()
    assert hello.json()["positions"] == {}
    reply = await subscribe(one.url, first.connection_id, topics, headers={"Authorization": f"Token {tokens['admin']}"})
    assert reply.status_code == 200, reply.text
    # Where each topic stood: the client can resume it even if no event reaches it before it drops.
    positions = dict(reply.json()["positions"])
    assert set(positions) == set(topics)
    await kill_mid_stream(one, first, steady, got, gaps)
    for topic, frames in got.items():
        positions[topic] = f"{frames[-1].json()['epoch']}:{frames[-1].json()['offset']}"
    second = SSEClient(two.url)
    await second.connect()
    try:
        reply = await subscribe(
            two.url,
            second.connection_id,
            topics,
            headers={"Authorization": f"Token {tokens['admin']}"},
            since=positions,
        )
        assert reply.status_code == 200, reply.text
        assert sorted(reply.json()["recovered"]) == sorted(topics)
        assert reply.json()["gaps"] == []
        await steady.task
        await drain(second, got, until=steady.total(), gaps=gaps)
    finally:
        await second.close()
    assert gaps == []
    check_exactly_once(got, steady.accepted)


async def test_a_restarted_embedded_process_says_gap_not_silence(start_worker, tokens):
    topic = "news.embedded"
    before = start_worker(name="before")
    async with SSEClient(before.url, topics=[topic]) as client:
        assert (await publish(before.url, tokens["admin"], topic, "news.posted", {"n": 1})).status_code == 202
        last = (await client.next_event("news.posted")).id
    before.stop()
    after = start_worker(name="after")
    # Accepted after the restart, before the client is back: the in-memory history of the old process is gone.
    assert (await publish(after.url, tokens["admin"], topic, "news.posted", {"n": 2})).status_code == 202
    async with SSEClient(after.url, topics=[topic], headers={"Last-Event-ID": last}) as client:
        gap = await client.next_frame()
        assert (gap.event, gap.json()) == ("gap", {"topics": [topic]})
        assert (await publish(after.url, tokens["admin"], topic, "news.posted", {"n": 3})).status_code == 202
        assert (await client.next_event("news.posted")).json()["data"] == {"n": 3}


async def test_a_redis_flushed_meanwhile_is_a_gap_never_old_offsets_in_a_new_epoch(redis_server, start_worker, tokens):
    topic = "news.flushed"
    worker = start_worker(redis_server.url)
    async with SSEClient(worker.url, topics=[topic]) as client:
        for n in range(3):
            assert (await publish(worker.url, tokens["admin"], topic, "news.posted", {"n": n})).status_code == 202
        frames = [await client.next_event("news.posted") for _ in range(3)]
    old = frames[1].json()
    store = aioredis.from_url(redis_server.url)
    try:
        await store.flushall()
    finally:
        await store.aclose()
    # The new epoch reaches offsets 1-3 again: under the old epoch's offset 2, these must not be replayed.
    for n in range(3, 6):
        assert (await publish(worker.url, tokens["admin"], topic, "news.posted", {"n": n})).status_code == 202
    async with SSEClient(worker.url, topics=[topic], since=f"{topic}:{old['epoch']}:{old['offset']}") as client:
        gap = await client.next_frame()
        assert (gap.event, gap.json()) == ("gap", {"topics": [topic]})
        with contextlib.suppress(TimeoutError):
            stray = await client.next_event("news.posted", timeout=0.5)
            raise AssertionError(f"an event of the new epoch was replayed as if resumed: {stray}")


async def test_a_position_trimmed_from_the_history_is_a_gap_then_live_events(redis_server, start_worker, tokens):
    topic = "news.trimmed"
    worker = start_worker(redis_server.url, REALTIME_HISTORY_SIZE="3")
    async with SSEClient(worker.url, topics=[topic]) as client:
        assert (await publish(worker.url, tokens["admin"], topic, "news.posted", {"n": 0})).status_code == 202
        last = (await client.next_event("news.posted")).id
    for n in range(1, 6):
        assert (await publish(worker.url, tokens["admin"], topic, "news.posted", {"n": n})).status_code == 202
    async with SSEClient(worker.url, topics=[topic], headers={"Last-Event-ID": last}) as client:
        gap = await client.next_frame()
        assert (gap.event, gap.json()) == ("gap", {"topics": [topic]})
        assert (await publish(worker.url, tokens["admin"], topic, "news.posted", {"n": 6})).status_code == 202
        assert (await client.next_event("news.posted")).json()["data"] == {"n": 6}


async def test_a_native_multi_topic_stream_resumes_the_named_topic_and_says_gap_for_the_others(
    redis_server, start_worker, tokens
):
    worker = start_worker(redis_server.url)
    topics = ["news.native.a", "news.native.b"]
    async with SSEClient(worker.url, topics=topics) as client:
        assert (await publish(worker.url, tokens["admin"], topics[0], "news.posted", {"n": 0})).status_code == 202
        last = (await client.next_event("news.posted")).id
    assert (await publish(worker.url, tokens["admin"], topics[0], "news.posted", {"n": 1})).status_code == 202
    async with SSEClient(worker.url, topics=topics, headers={"Last-Event-ID": last}) as client:
        gap = await client.next_frame()
        assert (gap.event, gap.json()) == ("gap", {"topics": [topics[1]]})
        assert (await client.next_event("news.posted")).json()["data"] == {"n": 1}


async def test_a_malformed_since_is_a_400_and_a_foreign_last_event_id_a_gap(start_worker):
    worker = start_worker()
    with pytest.raises(AssertionError, match="400"):
        await SSEClient(worker.url, topics=["news.x"], since="news.x:NOPE:1").connect()
    async with SSEClient(worker.url, topics=["news.x"], headers={"Last-Event-ID": "1700000000-dc1.ab"}) as client:
        gap = await client.next_frame()
        assert (gap.event, gap.json()) == ("gap", {"topics": ["news.x"]})
