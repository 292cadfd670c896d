"""The real-time core on two real Daphne workers sharing a real, private Redis."""

import asyncio

import httpx
import pytest

from tests.system.harness import SSEClient, eventually, publish, stats, streams, subscribe

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

LEASE = "3"


@pytest.fixture
def pair(redis_server, start_worker):
    a = start_worker(redis_server.url, name="a", REALTIME_LEASE_SECS=LEASE)
    b = start_worker(redis_server.url, name="b", REALTIME_LEASE_SECS=LEASE)
    return a, b


async def test_subscriber_on_a_receives_event_published_through_b(pair, tokens):
    a, b = pair
    async with streams(SSEClient(a.url, topics=["news.1.likes"])) as (client,):
        response = await publish(b.url, tokens["admin"], "news.1.likes", "like.created", {"n": 1})
        assert response.status_code == 202, response.text
        frame = await client.next_event("like.created")
        assert frame.json()["data"] == {"n": 1}
        assert frame.json()["topic"] == "news.1.likes"
        assert frame.event_id == response.json()["ids"][0]


async def test_subscription_sent_to_b_for_a_connection_held_by_a(pair, tokens):
    a, b = pair
    async with streams(SSEClient(a.url)) as (client,):
        response = await subscribe(b.url, client.connection_id, ["news.7.comments", "news.7.likes"])
        assert response.status_code == 200, response.text
        assert response.json()["topics"] == ["news.7.comments", "news.7.likes"]
        await publish(b.url, tokens["admin"], "news.7.comments", "comment.created", {"text": "hi"})
        assert (await client.next_event("comment.created")).json()["data"] == {"text": "hi"}


async def test_a_worker_without_subscribers_of_a_topic_receives_nothing_for_it(pair, tokens):
    a, b = pair
    async with streams(SSEClient(a.url, topics=["news.2.likes"]), SSEClient(b.url, topics=["news.3.likes"])) as (
        on_a,
        _on_b,
    ):
        before_a, before_b = await stats(a.url, tokens["admin"]), await stats(b.url, tokens["admin"])
        for n in range(5):
            await publish(b.url, tokens["admin"], "news.2.likes", "like.created", {"n": n})
        for n in range(5):
            assert (await on_a.next_event("like.created")).json()["data"] == {"n": n}
        after_a, after_b = await stats(a.url, tokens["admin"]), await stats(b.url, tokens["admin"])
        assert after_a["received_events"] - before_a["received_events"] == 5
        assert after_b["received_events"] - before_b["received_events"] == 0


async def test_unsubscribe_stops_delivery(pair, tokens):
    a, b = pair
    async with streams(SSEClient(a.url, topics=["news.4.likes", "news.4.comments"])) as (client,):
        response = await subscribe(b.url, client.connection_id, ["news.4.likes"], method="DELETE")
        assert response.status_code == 200
        assert response.json()["topics"] == ["news.4.comments"]
        await publish(a.url, tokens["admin"], "news.4.likes", "like.created", {"n": 1})
        await publish(a.url, tokens["admin"], "news.4.comments", "comment.created", {"n": 2})
        # Events on one topic pair arrive in publish order, so the comment proves the like was not sent.
        frame = await client.next_frame()
        assert (frame.event, frame.json()["data"]) == ("comment.created", {"n": 2})


async def test_closing_the_last_stream_removes_the_local_entry_and_the_registration(pair, tokens):
    a, _b = pair
    first = SSEClient(a.url, topics=["news.5.likes"])
    second = SSEClient(a.url, topics=["news.5.likes"])
    async with streams(first, second):
        assert (await stats(a.url, tokens["admin"]))["registered_topics"] == 1
        await first.close()

        async def one_connection_left():
            snapshot = await stats(a.url, tokens["admin"])
            return snapshot["connections"] == 1 and snapshot["registered_topics"] == 1

        await eventually(one_connection_left, timeout=10)

    async def nothing_left():
        snapshot = await stats(a.url, tokens["admin"])
        return snapshot["connections"] == 0 and snapshot["registered_topics"] == 0 and snapshot["topics"] == 0

    await eventually(nothing_left, timeout=10)


async def test_sigkilled_worker_leaves_no_registration_after_the_lease(pair, redis_server, tokens):
    import redis.asyncio as aioredis

    a, b = pair
    client = SSEClient(a.url, topics=["news.6.likes"])
    await client.connect()
    store = aioredis.Redis.from_url(redis_server.url)
    key = "livesite:group:news.6.likes"
    # A live lease: the member is refreshed every third of the lease, so it never gets older than that.
    assert await store.zcard(key) == 1
    a.kill()
    await client.close()

    async def registration_gone():
        # What a publisher sees: group_send prunes members older than the lease before sending.
        await publish(b.url, tokens["admin"], "news.6.likes", "like.created", {})
        return await store.zcard(key) == 0

    await eventually(registration_gone, timeout=float(LEASE) + 5, interval=0.5)
    await store.aclose()


async def test_bad_input_gets_a_json_4xx(pair, tokens, member_ids):
    a, b = pair
    async with streams(SSEClient(a.url, headers={"Authorization": f"Token {tokens['alice']}"})) as (alice,):
        cases = [
            (b"not json", 400),
            (b"[]", 400),
            (b'{"connection_id": "x", "topics": "news.1.likes"}', 400),
            (b'{"connection_id": "x", "topics": ["Video 1"]}', 400),
            (b'{"connection_id": "x", "topics": ["' + b"a" * 101 + b'"]}', 400),
            (b'{"connection_id": "nope", "topics": ["news.1.likes"]}', 404),
        ]
        async with httpx.AsyncClient(timeout=10) as http:
            for body, status in cases:
                response = await http.post(f"{b.url}/realtime/subscriptions", content=body)
                assert response.status_code == status, (body, response.text)
                assert response.json()["detail"], response.text
            # Another member (or nobody) may not change alice's stream.
            response = await subscribe(
                b.url,
                alice.connection_id,
                ["news.1.likes"],
                headers={"Authorization": f"Token {tokens['bob']}"},
            )
            assert response.status_code == 403, response.text
            response = await subscribe(a.url, alice.connection_id, ["news.1.likes"])
            assert response.status_code == 403, response.text
            # A member-private topic of someone else.
            headers = {"Authorization": f"Token {tokens['alice']}"}
            response = await subscribe(
                b.url, alice.connection_id, [f"member.{member_ids['bob']}.inbox"], headers=headers
            )
            assert response.status_code == 403, response.text
            response = await subscribe(
                b.url, alice.connection_id, [f"member.{member_ids['alice']}.inbox"], headers=headers
            )
            assert response.status_code == 200, response.text
            too_many = [f"t.{n}" for n in range(129)]
            response = await subscribe(b.url, alice.connection_id, too_many, headers=headers)
            assert response.status_code == 409, response.text  # the one topic limit, one answer
            # alice holds one topic already: 128 more would make 129.
            response = await subscribe(b.url, alice.connection_id, too_many[:128], headers=headers)
            assert response.status_code == 409, response.text
            # Nothing already accepted was lost, and the limit itself is allowed.
            response = await subscribe(b.url, alice.connection_id, too_many[:127], headers=headers)
            assert response.status_code == 200, response.text
            assert len(response.json()["topics"]) == 128
            assert f"member.{member_ids['alice']}.inbox" in response.json()["topics"]
            response = await http.get(f"{a.url}/realtime/connect", params={"topics": "Bad Topic"})
            assert response.status_code == 400
            assert "topic" in response.json()["detail"]
            response = await http.get(f"{a.url}/realtime/connect", params={"topics": "member.1.inbox"})
            assert response.status_code == 403
            response = await http.get(f"{a.url}/realtime/connect", headers={"Authorization": "Token wrong"})
            assert response.status_code == 401
            response = await http.post(
                f"{a.url}/api/publish",
                json={"topic": "x", "type": "y", "data": 1},
                headers={"Authorization": f"Token {tokens['alice']}"},
            )
            assert response.status_code == 403
            response = await http.post(
                f"{a.url}/api/publish",
                json={"events": [{"topic": "ok.topic", "type": "ok", "data": 1}, {"topic": "BAD", "type": "ok"}]},
                headers={"Authorization": f"Token {tokens['admin']}"},
            )
            assert response.status_code == 400
            assert "events" in response.json()["errors"]


async def test_stream_headers_retry_and_keepalive(redis_server, start_worker):
    worker = start_worker(redis_server.url, REALTIME_KEEPALIVE_SECS="0.2")
    async with streams(SSEClient(worker.url)) as (client,):
        headers = client.response.headers
        assert headers["content-type"].startswith("text/event-stream")
        assert "no-cache" in headers["cache-control"]
        assert headers["x-accel-buffering"] == "no"
        assert client.retry == 2000

        async def some_keepalives():
            return client.comments >= 2

        await eventually(some_keepalives, timeout=5, interval=0.05)


async def test_events_on_one_topic_arrive_in_order_with_increasing_ids(pair, tokens):
    a, b = pair
    async with streams(SSEClient(a.url, topics=["news.8.likes"])) as (client,):
        await asyncio.gather(
            *(publish(b.url, tokens["admin"], "news.8.likes", "like.created", {"n": n}) for n in range(3))
        )
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{b.url}/api/publish",
                json={
                    "events": [{"topic": "news.8.likes", "type": "like.created", "data": {"n": n}} for n in range(20)]
                },
                headers={"Authorization": f"Token {tokens['admin']}"},
            )
        ids = response.json()["ids"]
        assert len(set(ids)) == 20
        frames = [await client.next_event("like.created") for _ in range(23)]
        batch = [frame for frame in frames if frame.event_id in ids]
        assert [frame.json()["data"]["n"] for frame in batch] == list(range(20))
        numeric = [int(frame.event_id.split("-")[0]) for frame in batch]
        assert numeric == sorted(numeric)


async def test_a_batch_to_many_topics_costs_one_message_per_hosting_worker(pair, tokens):
    a, b = pair
    on_a = SSEClient(a.url, topics=[f"news.room{n}" for n in range(10)])
    on_b = SSEClient(b.url, topics=[f"news.room{n}" for n in range(10, 20)])
    async with streams(on_a, on_b):
        before = {w.url: await stats(w.url, tokens["admin"]) for w in (a, b)}
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{a.url}/api/publish",
                json={"events": [{"topic": f"news.room{n}", "type": "said", "data": {"n": n}} for n in range(30)]},
                headers={"Authorization": f"Token {tokens['admin']}"},
            )
        assert response.status_code == 202
        assert [(await on_a.next_event("said")).json()["data"]["n"] for _ in range(10)] == list(range(10))
        assert [(await on_b.next_event("said")).json()["data"]["n"] for _ in range(10)] == list(range(10, 20))
        after = {w.url: await stats(w.url, tokens["admin"]) for w in (a, b)}
        # 30 events on 30 topics, 20 of them hosted: one round, one message to each of the two workers.
        for worker in (a, b):
            assert after[worker.url]["received_messages"] - before[worker.url]["received_messages"] == 1
        assert after[a.url]["dispatch_published"] - before[a.url]["dispatch_published"] == 30
        assert after[a.url]["dispatch_worker_messages"] - before[a.url]["dispatch_worker_messages"] == 2


async def test_a_live_worker_keeps_its_registrations_past_many_leases(redis_server, start_worker, tokens):
    a = start_worker(redis_server.url, name="a", REALTIME_LEASE_SECS="1")
    b = start_worker(redis_server.url, name="b", REALTIME_LEASE_SECS="1")
    async with streams(SSEClient(a.url, topics=["news.10.likes"])) as (client,):
        # Time itself is what is under test: three leases pass, refreshed every third of one.
        await asyncio.sleep(3.5)
        response = await publish(b.url, tokens["admin"], "news.10.likes", "like.created", {"n": 1})
        assert response.status_code == 202
        assert (await client.next_event("like.created")).json()["data"] == {"n": 1}
