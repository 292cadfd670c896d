"""The channel layer for several Redis shards: channels-redis' core layer with its shard choice made consistent.

channels-redis 4.3 picks the shard of a process-specific channel (`name!suffix`) from the WHOLE name when it
sends, but from the part before the suffix (`name!`) when the process receives and when it sends to a group.
With one Redis both are shard 0; with several, a direct send (the dispatcher's one message per worker) lands
on a shard the worker never reads, and the events are lost without an error. Hashing the same part in all
three places puts every message of a worker on the shard it reads.
"""

from typing import Any

from channels_redis.core import RedisChannelLayer


class ShardedRedisChannelLayer(RedisChannelLayer):  # type: ignore[misc]
    def consistent_hash(self, value: Any) -> int:
        if isinstance(value, bytes):
            value = value.decode("utf8")
        head, bang, suffix = value.partition("!")
        if bang and suffix:
            value = head + bang  # the process's part: where its receive loop reads
        return int(super().consistent_hash(value))
