"""Cross-data-centre dispatch: two and three data centres, each with its own Redis and Daphne worker."""

import json
import time

import httpx
import pytest

from realtime.peers import PEER_PATH, signed_headers
from tests.system.harness import RedisServer, SSEClient, Worker, base_env, eventually, publish, stats, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

SECRET = "test-peer-secret"


@pytest.fixture
def data_centres(site):
    """Start n data centres (own redis-server and worker each, full mesh of peers); stops them after."""
    started: list = []

    def start(n: int) -> list[Worker]:
        names = [f"dc{i + 1}" for i in range(n)]
        redises = [RedisServer().start() for _ in names]
        started.extend(redises)
        workers = [Worker(base_env(site["tmp"]), name=name) for name in names]
        for name, redis_server, worker in zip(names, redises, workers, strict=True):
            peers = ",".join(
                f"{other}=http://127.0.0.1:{w.port}" for other, w in zip(names, workers, strict=True) if other != name
            )
            worker.env.update(
                DATA_CENTER=name, REALTIME_PEERS=peers, REALTIME_PEER_SECRET=SECRET, REDIS_URL=redis_server.url
            )
        for worker in workers:
            worker.start()
            started.append(worker)
        return workers

    yield start
    for thing in reversed(started):
        thing.stop()


async def test_a_like_published_in_dc1_reaches_a_subscriber_in_dc2_exactly_once(data_centres, tokens):
    dc1, dc2 = data_centres(2)
    async with streams(SSEClient(dc2.url, topics=["news.1.likes"])) as (viewer,):
        response = await publish(dc1.url, tokens["admin"], "news.1.likes", "like.created", {"n": 1})
        assert response.status_code == 202
        frame = await viewer.next_event("like.created")
        assert frame.event_id == response.json()["ids"][0]
        assert frame.event_id.split("-", 1)[1].startswith("dc1.")
        await viewer.assert_no_frame(within=0.5)


async def test_a_publish_in_dc2_reaches_dc1(data_centres, tokens):
    dc1, dc2 = data_centres(2)
    async with streams(SSEClient(dc1.url, topics=["news.2.comments"])) as (viewer,):
        await publish(dc2.url, tokens["admin"], "news.2.comments", "comment.created", {"text": "from dc2"})
        assert (await viewer.next_event("comment.created")).json()["data"] == {"text": "from dc2"}


async def test_three_data_centres_every_subscriber_gets_each_event_exactly_once(data_centres, tokens):
    workers = data_centres(3)
    viewers = [SSEClient(worker.url, topics=["news.flash"]) for worker in workers]
    async with streams(*viewers):
        sent = []
        for n, worker in enumerate(workers):
            response = await publish(worker.url, tokens["admin"], "news.flash", "news.posted", {"n": n})
            sent.append(response.json()["ids"][0])
        for viewer in viewers:
            got = [(await viewer.next_event("news.posted")).event_id for _ in range(3)]
            assert sorted(got) == sorted(sent)
            await viewer.assert_no_frame(within=0.3)


async def test_forged_replayed_and_unsigned_peer_requests_are_rejected(data_centres, tokens):
    _dc1, dc2 = data_centres(2)
    body = json.dumps(
        {
            "events": [
                {"id": "1-dc1.x", "topic": "news.3.likes", "type": "like.created", "data": {}, "published_at": 1.0}
            ]
        }
    ).encode()
    async with streams(SSEClient(dc2.url, topics=["news.3.likes"])) as (viewer,), httpx.AsyncClient() as http:
        url = dc2.url + PEER_PATH
        assert (await http.post(url, content=body)).status_code == 403
        forged = signed_headers("wrong-secret", "dc1", body, time.time())
        assert (await http.post(url, content=body, headers=forged)).status_code == 403
        unknown = signed_headers(SECRET, "dc9", body, time.time())
        assert (await http.post(url, content=body, headers=unknown)).status_code == 403
        stale = signed_headers(SECRET, "dc1", body, time.time() - 3600)
        assert (await http.post(url, content=body, headers=stale)).status_code == 403
        tampered = signed_headers(SECRET, "dc1", body, time.time())
        assert (await http.post(url, content=body.replace(b"{}", b'{"x":1}'), headers=tampered)).status_code == 403
        await viewer.assert_no_frame(within=0.3)
        # A genuine request is delivered once; the same request replayed (a retry) is not delivered again.
        genuine = signed_headers(SECRET, "dc1", body, time.time())
        first = await http.post(url, content=body, headers=genuine)
        assert first.json()["delivered"] == 1, first.text
        replay = await http.post(url, content=body, headers=genuine)
        assert replay.status_code == 200
        assert replay.json()["delivered"] == 0
        assert (await viewer.next_event("like.created")).event_id == "1-dc1.x"
        await viewer.assert_no_frame(within=0.3)
        bad = signed_headers(SECRET, "dc1", b"{not json", time.time())
        response = await http.post(url, content=b"{not json", headers=bad)
        assert response.status_code == 400
        assert response.json()["detail"]


async def test_with_dc2_down_dc1_still_delivers_locally_and_counts_the_failures(data_centres, tokens):
    dc1, dc2 = data_centres(2)
    dc2.stop()
    async with streams(SSEClient(dc1.url, topics=["news.4.likes"])) as (viewer,):
        for n in range(3):
            response = await publish(dc1.url, tokens["admin"], "news.4.likes", "like.created", {"n": n})
            assert response.status_code == 202
        for n in range(3):
            assert (await viewer.next_event("like.created")).json()["data"] == {"n": n}

        async def failures_counted():
            peer = (await stats(dc1.url, tokens["admin"]))["peers"]["dc2"]
            return peer["failed_attempts"] >= 1 and peer["forwarded"] == 0 and peer

        await eventually(failures_counted, timeout=10)


async def test_a_dc2_client_resumes_what_dc1_published_while_it_was_away(data_centres, tokens):
    dc1, dc2 = data_centres(2)
    topic = "news.9.resume"
    async with streams(SSEClient(dc2.url, topics=[topic])) as (viewer,):
        assert (await publish(dc1.url, tokens["admin"], topic, "news.posted", {"n": 0})).status_code == 202
        first = await viewer.next_event("news.posted")
    # The position is DC-2's own: DC-2's history holds the events it received from DC-1.
    assert first.id.startswith(f"{topic}:")
    away = []
    for n in range(1, 4):
        response = await publish(dc1.url, tokens["admin"], topic, "news.posted", {"n": n})
        assert response.status_code == 202
        away.extend(response.json()["ids"])
    # DC-2 has them (forwarding is asynchronous) before the client comes back.
    await eventually(lambda: _delivered(dc2.url, tokens["admin"], 4), timeout=10)
    async with streams(SSEClient(dc2.url, topics=[topic], headers={"Last-Event-ID": first.id})) as (viewer,):
        got = [(await viewer.next_event("news.posted")).event_id for _ in range(3)]
        assert got == away
        await viewer.assert_no_frame(within=0.5)


async def _delivered(url: str, token: str, count: int) -> bool:
    return (await stats(url, token))["dispatch_published"] >= count
