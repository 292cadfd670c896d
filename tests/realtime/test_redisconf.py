"""REDIS_URL's forms (livesite/redisconf.py) and the channel layer's shard choice (realtime/layers.py)."""

import pytest

from livesite import redisconf
from livesite.redisconf import InvalidRedisUrl, Shard
from realtime.layers import ShardedRedisChannelLayer


def test_one_server_and_shards() -> None:
    assert redisconf.parse("") == []
    assert redisconf.parse("redis://127.0.0.1:6379/0") == [Shard(url="redis://127.0.0.1:6379/0")]
    shards = redisconf.parse("redis://a:6379/0, redis://b:6379/0,rediss://c:6380/1")
    assert [shard.url for shard in shards] == ["redis://a:6379/0", "redis://b:6379/0", "rediss://c:6380/1"]
    assert [redisconf.parse(shard.spec) for shard in shards] == [[shard] for shard in shards]


def test_primaries_through_sentinel() -> None:
    shards = redisconf.parse("sentinel://127.0.0.1:26379,[::1]:26380/one,two?db=2&password=p&sentinel_password=s")
    assert [shard.master for shard in shards] == ["one", "two"]
    assert shards[0].sentinels == (("127.0.0.1", 26379), ("::1", 26380))
    assert (shards[0].db, shards[0].password, shards[0].sentinel_password) == (2, "p", "s")
    assert redisconf.parse(shards[1].spec) == [shards[1]]
    host = redisconf.layer_host(shards[0], max_connections=10)
    assert host["master_name"] == "one"
    assert host["sentinels"] == [("127.0.0.1", 26379), ("::1", 26380)]
    assert host["sentinel_kwargs"]["password"] == "s"
    assert (host["db"], host["password"], host["max_connections"]) == (2, "p", 10)
    assert "p" not in str(shards[0])  # logs never show a password


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("http://a:6379", "is not a redis://"),
        ("redis://a:6379/0,redis://a:6379/0", "same server twice"),
        ("sentinel://a:26379", "names its primaries"),
        ("sentinel://a/m", "is not host:port"),
        ("sentinel://a:1/m?dbx=1", "unknown sentinel option"),
        ("sentinel://a:1/m?db=x", "is not a number"),
        ("sentinel://a:1/m,m", "same primary twice"),
    ],
)
def test_a_malformed_url_says_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidRedisUrl, match=reason):
        redisconf.parse(text)


def test_app_keys_spread_evenly_and_stay_put() -> None:
    counts = [0, 0, 0]
    for n in range(3000):
        counts[redisconf.shard_index(f"livesite:limit:publish:{n}", 3)] += 1
    assert all(800 < count < 1200 for count in counts), counts
    assert redisconf.shard_index("x", 1) == 0


def test_a_worker_channel_is_written_on_the_shard_its_worker_reads() -> None:
    layer = ShardedRedisChannelLayer(hosts=["redis://a:1", "redis://b:2", "redis://c:3"])
    for n in range(200):
        process = f"realtime.worker.{n:032x}!"
        # send() hashes the whole name, receive and group_send the process's part: the same shard now.
        assert layer.consistent_hash(process + f"{n:08x}") == layer.consistent_hash(process)
    assert {layer.consistent_hash(f"t.{n}") for n in range(50)} == {0, 1, 2}  # groups still spread
