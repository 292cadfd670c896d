"""REDIS_URL naming several redis-servers: every feature works on 2 and 3 shards, and the keys land where
the hashes say (channel layer: channels-redis' consistent hash; the app's per-key state: redisconf.shard_index;
the cluster-wide state: the first, "home" shard)."""

from collections.abc import Iterator

import httpx
import pytest
import redis

from livesite import redisconf
from realtime.layers import ShardedRedisChannelLayer
from tests.system.harness import (
    RedisServer,
    SSEClient,
    base_env,
    eventually,
    publish,
    run_django,
    stats,
    streams,
    subscribe,
)

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

TOPICS = [f"t.shard{n}" for n in range(24)]
ENV = {
    "PRESENCE_HEARTBEAT_SECS": "0.2",
    "PRESENCE_OFFLINE_AFTER_SECS": "1.0",
    "REALTIME_CENSUS_SECS": "0.2",
    "LIKES_COALESCE_MS": "50",
    # On, so its counters are written (and spread), far above what the test does.
    "REALTIME_RATE_LIMITS": "connect=0,subscribe=0,publish=100000/m,like=0,comment=0,sign_in=0",
}
VIDEO_SCRIPT = """
import uuid
from django.contrib.auth.models import User
from likes.models import LiveVideo
admin = User.objects.get(username="admin")
print(LiveVideo.objects.create(title="Shards", slug="shards-" + uuid.uuid4().hex[:12], owner=admin).pk)
"""


@pytest.fixture(params=[2, 3], ids=lambda n: f"{n}-shards")
def shards(request: pytest.FixtureRequest) -> Iterator[list[RedisServer]]:
    servers = [RedisServer().start() for _ in range(request.param)]
    yield servers
    for server in servers:
        server.stop()


def keys_by_server(servers: list[RedisServer]) -> list[set[str]]:
    found = []
    for server in servers:
        client = redis.Redis.from_url(server.url)
        found.append({key.decode() for key in client.scan_iter("livesite*", count=1000)})
        client.close()
    return found


async def test_every_feature_works_on_sharded_redis(shards, start_worker, site, tokens, member_ids) -> None:
    redis_url = ",".join(server.url for server in shards)
    video = int(run_django(base_env(site["tmp"]), VIDEO_SCRIPT))
    likes_topic = f"video.{video}.likes"
    a = start_worker(redis_url, name="a", **ENV)
    b = start_worker(redis_url, name="b", **ENV)
    admin = {"Authorization": f"Token {tokens['admin']}"}
    alice = {"Authorization": f"Token {tokens['alice']}"}
    presence_topic = f"presence.member.{member_ids['alice']}"
    reader = SSEClient(a.url, topics=[*TOPICS, likes_topic, f"census.{likes_topic}", presence_topic], headers=admin)
    async with streams(reader), httpx.AsyncClient(timeout=10) as http:
        # Presence: alice's device on the other worker turns her dot green.
        async with SSEClient(b.url, headers=alice):
            frame = await reader.next_event("presence.changed", timeout=5)
            assert frame.json()["data"]["status"] == "online"

            # Publish: one event per topic through the other worker, every one delivered once.
            first: dict[str, str] = {}
            for n, topic in enumerate(TOPICS):
                assert (await publish(b.url, tokens["admin"], topic, "tick", {"n": n})).status_code == 202
            for _ in TOPICS:
                frame = await reader.next_event("tick", timeout=5)
                body = frame.json()
                assert body["topic"] not in first
                first[body["topic"]] = f"{body['epoch']}:{body['offset']}"
            assert set(first) == set(TOPICS)

            # History on every shard: a second event per topic, recovered by a new stream from the first's position.
            for n, topic in enumerate(TOPICS):
                assert (await publish(b.url, tokens["admin"], topic, "tick", {"n": 100 + n})).status_code == 202
            async with SSEClient(b.url) as late:
                reply = await subscribe(b.url, late.connection_id, TOPICS, headers=admin, since=first)
                assert reply.status_code == 200, reply.text
                assert sorted(reply.json()["recovered"]) == sorted(TOPICS)
                assert reply.json()["gaps"] == []
                recovered = [(await late.next_event("tick", timeout=5)).json()["data"]["n"] for _ in TOPICS]
                assert sorted(recovered) == [100 + n for n in range(len(TOPICS))]

            # Census: the reader and a viewer on the other worker make 2 watching.
            async with SSEClient(b.url, topics=[likes_topic]):
                while (await reader.next_event("census.changed", timeout=5)).json()["data"]["count"] != 2:
                    pass

            # Like coalescing: a like through either worker, its exact total on the stream.
            for worker, count in ((a, 1), (b, 2)):
                response = await http.post(f"{worker.url}/api/videos/{video}/likes", headers=alice)
                assert response.status_code == 201, response.text
                while (await reader.next_event("like.created", timeout=5)).json()["data"]["count"] != count:
                    pass

            # Tickets: issued by one worker, taken by the other, each once.
            for _ in range(6):
                ticket = (await http.post(f"{a.url}/realtime/tickets", headers=alice)).json()["ticket"]
                async with http.stream("GET", f"{b.url}/realtime/connect", params={"ticket": ticket}) as response:
                    assert response.status_code == 200
                response = await http.get(f"{a.url}/realtime/connect", params={"ticket": ticket})
                assert response.status_code == 401

        # Alice's last device closed: offline, from the sweeper on the home shard.
        frame = await reader.next_event("presence.changed", timeout=5)
        assert frame.json()["data"]["status"] == "offline"

        where = keys_by_server(shards)
        _check_spread(where, len(shards))


def _check_spread(where: list[set[str]], count: int) -> None:
    everything = set().union(*where)
    assert sum(len(keys) for keys in where) == len(everything), "a key is on two shards"
    from channels_redis.utils import _consistent_hash  # the layer's own placement (what group_send uses)

    groups = [key for key in everything if key.startswith("livesite:group:t.shard")]
    histories = [key for key in everything if key.startswith("livesite:history:t.shard") and not key.endswith(":m")]
    assert len(groups) == len(histories) == len(TOPICS)
    for key in groups + histories:
        group = key.split(":", 2)[2]
        assert key in where[_consistent_hash(group, count)], key
    # The app's per-key state follows redisconf.shard_index; each shard got some of it.
    per_key = [key for key in everything if key.startswith(("livesite:limit:", "livesite:census:video."))]
    assert per_key
    for key in per_key:
        assert key in where[redisconf.shard_index(key, count)], key
    # Every shard holds some of the traffic: the layout spreads, not just the configuration.
    for keys in where:
        assert any(key.startswith("livesite:group:") for key in keys)
    # The cluster-wide state lives on the home shard only.
    for prefix in ("livesite:presence", "livesite:streams:", "livesite:alive:"):
        assert not any(key.startswith(prefix) for keys in where[1:] for key in keys), prefix


def test_an_invalid_redis_url_stops_the_start_with_its_reason(site: dict) -> None:
    env = base_env(site["tmp"], REDIS_URL="redis://127.0.0.1:1/0,http://nope")
    with pytest.raises(RuntimeError, match="is not a redis://"):
        run_django(env, "print(1)")


async def test_one_shard_down_fails_only_its_topics_and_readyz_names_it(start_worker, tokens) -> None:
    servers = [RedisServer().start() for _ in range(2)]
    try:
        worker = start_worker(",".join(server.url for server in servers), name="halves")
        layer = ShardedRedisChannelLayer(hosts=[server.url for server in servers])
        # The shard the worker reads its channel from stays up (without it the worker receives nothing until
        # it returns); the other one goes: its topics fail, the rest of the site does not notice.
        up = layer.consistent_hash((await stats(worker.url, tokens["admin"]))["worker"])
        down = 1 - up
        on = {layer.consistent_hash(topic): topic for topic in TOPICS}  # a topic whose group is on each shard
        async with streams(SSEClient(worker.url, topics=[on[0], on[1]])) as (reader,), httpx.AsyncClient() as http:

            async def shards_checked() -> bool:  # the worker knows each shard's run_id (once a second)
                return (await stats(worker.url, tokens["admin"]))["registry_shard_checks"] > 0

            await eventually(shards_checked, timeout=5)
            servers[down].stop()
            response = await http.get(f"{worker.url}/readyz")
            assert response.status_code == 503
            assert f"127.0.0.1:{servers[down].port}" in response.json()["checks"]["redis"]
            assert f"127.0.0.1:{servers[up].port}" not in response.json()["checks"]["redis"]
            assert (await publish(worker.url, tokens["admin"], on[down], "tick", {"n": 1})).status_code == 503
            assert (await publish(worker.url, tokens["admin"], on[up], "tick", {"n": 2})).status_code == 202
            assert (await reader.next_event("tick", timeout=5)).json()["topic"] == on[up]

            servers[down].start()  # back, empty: its groups and history are gone

            async def accepted() -> bool:  # refused (503) until the worker's client reconnects to the shard
                response = await publish(worker.url, tokens["admin"], on[down], "tick", {"n": 3})
                assert response.status_code in (202, 503), response.text
                return response.status_code == 202

            await eventually(accepted, timeout=10)
            # The worker noticed the restart by itself (the shard's run_id changed), registered again and read
            # the topic's new history: the event arrives, and no gap (nothing accepted was lost: the publishes
            # during the outage were refused).
            frame = await reader.next_event("tick", timeout=10)
            assert frame.json()["topic"] == on[down]
            assert frame.json()["data"] == {"n": 3}
            assert (await http.get(f"{worker.url}/readyz")).status_code == 200
    finally:
        for server in servers:
            server.stop()
