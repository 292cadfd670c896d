"""Level 1 of the fan-out: topic -> the workers hosting its subscribers, kept in the channel layer.

The only module that talks to the channel layer. Each topic is a channel-layer group whose members are
WORKER channels (one per process, never one per connection), so a publish costs one message per worker
that hosts subscribers, and none to the others. Memberships are leases: the layer's `group_expiry` is
set to REALTIME LEASE_SECS and each worker re-adds its topics every third of it, so a worker that dies
without cleaning up (SIGKILL) drops out of every group within one lease.

On channels-redis, a round of publishes reads the members of all its topics in one pipelined request per
Redis shard, then sends each hosting worker ONE message carrying every event for it, whatever the number
of topics: `group_send` would cost four round trips per topic, which caps a dispatcher far below 5,000
events/s when events go to many different topics. Membership follows `group_send`'s own rule (members
older than `group_expiry` are pruned and ignored), so the two paths agree. Other layers use `group_send`.
"""

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

from realtime.topics import group_name

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

logger = logging.getLogger(__name__)

WORKER_CHANNEL_PREFIX = "realtime.worker"
EVENT = "rt.event"  # {"topic", "frames"}: one topic's events (group_send path)
EVENTS = "rt.events"  # {"events": [[topic, frames], ...]}: every event of a round for one worker
RPC = "rt.rpc"
REPLY = "rt.reply"

# A channel-layer message: a msgpack-able dict whose other keys depend on its "type" (above). What comes off
# the layer is whatever another worker sent, and channels is untyped: Any is that boundary.
LayerMessage = dict[str, Any]


class DispatchUnavailable(Exception):
    """The channel layer (Redis) could not be reached: nothing was sent."""


# Per group key: drop members whose lease ran out (as channels-redis' group_send does), then read the rest.
# One call per shard instead of two pipelined commands per topic: the client side of those was 23 % of a
# dispatcher's CPU at 8,000 events/s over 4,040 topics (docs/benchmarks.md).
_MEMBERS_LUA = """
local members = {}
for index, key in ipairs(KEYS) do
    redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[1])
    members[index] = redis.call('ZRANGE', key, 0, -1)
end
return members
"""


class Dispatcher:
    """Registration and delivery over one channel layer. Async; one event loop at a time.

    Publishing is group-commit: while one round of sends is in flight, new events queue up, and the next
    round sends every frame pending for a topic in ONE message per hosting worker, in call order. An idle
    dispatcher sends at once (no added latency); a busy one sends fewer, larger messages, which is what
    keeps Redis round trips per event falling as the publish rate rises.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.stats = {
            "published": 0,
            "worker_messages": 0,
            "lookups": 0,
            "dropped_worker_full": 0,
            "registrations": 0,
            "deregistrations": 0,
            "failed_rounds": 0,
        }
        self._direct = isinstance(layer, RedisChannelLayer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, list[bytes]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._members_script: AsyncScript | None = None

    async def anew_worker_channel(self) -> str:
        channel: str = await self.layer.new_channel(WORKER_CHANNEL_PREFIX)
        return channel

    async def aregister(self, topic: str, worker_channel: str) -> None:
        """Add (or refresh the lease of) `worker_channel` as a host of `topic`."""
        await self.layer.group_add(group_name(topic), worker_channel)
        self.stats["registrations"] += 1

    async def arefresh(self, topics: list[str], worker_channel: str) -> None:
        """Renew the leases of `worker_channel` on many topics: one pipelined request per Redis shard.

        Exactly what `group_add` does per topic (a fresh score, the key's expiry reset), without a round trip
        per topic: with one topic per connection, per-topic refreshes grew with the connections.
        """
        if not self._direct:
            for topic in topics:
                await self.aregister(topic, worker_channel)
            return
        layer = self.layer
        by_shard: dict[int, list[str]] = {}
        for topic in topics:
            by_shard.setdefault(layer.consistent_hash(group_name(topic)), []).append(topic)

        async def refresh(index: int, shard_topics: list[str]) -> None:
            now = time.time()
            async with layer.connection(index).pipeline(transaction=False) as pipe:
                for topic in shard_topics:
                    key = layer._group_key(group_name(topic))
                    pipe.zadd(key, {worker_channel: now})
                    pipe.expire(key, layer.group_expiry)
                await pipe.execute()

        await asyncio.gather(*(refresh(index, shard_topics) for index, shard_topics in by_shard.items()))
        self.stats["registrations"] += len(topics)

    async def aderegister(self, topic: str, worker_channel: str) -> None:
        await self.layer.group_discard(group_name(topic), worker_channel)
        self.stats["deregistrations"] += 1

    async def asend_events(self, events: list[tuple[str, bytes]]) -> None:
        """Send encoded events, in order, in as few rounds as possible (one when idle).

        Returns once every event is handed to the layer; raises DispatchUnavailable if the channel layer could
        not be reached, or whatever else failed the round (its events were not sent).
        """
        if not events:
            return
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests, management commands): state of a dead loop is meaningless here.
            self._loop, self._pending, self._waiters, self._flusher = loop, {}, {}, None
        waiting = []
        for topic, frame in events:
            done: asyncio.Future[None] = loop.create_future()
            self._pending.setdefault(topic, []).append(frame)
            self._waiters.setdefault(topic, []).append(done)
            waiting.append(done)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # Every future of a failed round carries the same error: retrieve them all, raise it once.
        for result in await asyncio.gather(*waiting, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def _flush(self) -> None:
        while self._pending:
            pending, waiters = self._pending, self._waiters
            self._pending, self._waiters = {}, {}
            try:
                failures = await (self._send_round(pending) if self._direct else self._group_send_each(pending))
            except asyncio.CancelledError:
                # The loop is going away: nobody may wait forever for a round that will never be sent.
                _settle(waiters, dict.fromkeys(waiters, DispatchUnavailable("the dispatcher was stopped")))
                raise
            except Exception as exc:
                # A bug or an error nobody foresaw: this round's publishers get it, the next round goes on.
                self.stats["failed_rounds"] += 1
                logger.exception("a dispatch round of %d topics failed", len(pending))
                failures = dict.fromkeys(pending, exc)
            _settle(waiters, failures)

    async def _send_round(self, pending: dict[str, list[bytes]]) -> dict[str, BaseException]:
        """One membership read for all topics, then one message per hosting worker (channels-redis)."""
        try:
            hosts = await self._hosts(list(pending))
            per_worker: dict[str, list[list[str | list[bytes]]]] = {}  # [topic, frames]: msgpack has no tuples
            for topic, frames in pending.items():
                for channel in hosts[topic]:
                    per_worker.setdefault(channel, []).append([topic, frames])
            results = await asyncio.gather(
                *(
                    self.layer.send(channel, {"type": EVENTS, "events": events})
                    for channel, events in per_worker.items()
                ),
                return_exceptions=True,
            )
        except (RedisError, OSError) as exc:
            failure = DispatchUnavailable(f"the channel layer is unreachable: {exc}")
            return dict.fromkeys(pending, failure)
        for channel, result in zip(per_worker, results, strict=True):
            if isinstance(result, ChannelFull):
                # That worker has stopped reading (stuck or dead, its lease not yet expired): the others got theirs.
                self.stats["dropped_worker_full"] += 1
                logger.warning("worker channel %s is full: a round of events was dropped for it", channel)
            elif isinstance(result, (RedisError, OSError)):
                failure = DispatchUnavailable(f"the channel layer is unreachable: {result}")
                return dict.fromkeys(pending, failure)
            elif isinstance(result, BaseException):
                raise result
        self.stats["published"] += sum(len(frames) for frames in pending.values())
        self.stats["worker_messages"] += len(per_worker)
        self.stats["lookups"] += 1
        return {}

    async def _hosts(self, topics: list[str]) -> dict[str, list[str]]:
        """topic -> worker channels registered for it, pruned as group_send prunes, one script call per shard."""
        layer = self.layer
        stale = int(time.time()) - layer.group_expiry
        by_shard: dict[int, list[str]] = {}
        for topic in topics:
            by_shard.setdefault(layer.consistent_hash(group_name(topic)), []).append(topic)

        async def read(index: int, shard_topics: list[str]) -> list[list[bytes]]:
            connection = layer.connection(index)
            if self._members_script is None:
                self._members_script = connection.register_script(_MEMBERS_LUA)
            # The layer's own key format, as group_send uses.
            keys = [layer._group_key(group_name(topic)) for topic in shard_topics]
            members: list[list[bytes]] = await self._members_script(keys=keys, args=[stale], client=connection)
            return members

        shards = list(by_shard.items())
        rows = await asyncio.gather(*(read(index, shard_topics) for index, shard_topics in shards))
        hosts: dict[str, list[str]] = {}
        for (_, shard_topics), members in zip(shards, rows, strict=True):
            for topic, channels in zip(shard_topics, members, strict=True):
                hosts[topic] = [channel.decode() for channel in channels]
        return hosts

    async def _group_send_each(self, pending: dict[str, list[bytes]]) -> dict[str, BaseException]:
        topics = list(pending)
        results = await asyncio.gather(
            *(self._group_send(topic, pending[topic]) for topic in topics), return_exceptions=True
        )
        return {topic: result for topic, result in zip(topics, results, strict=True) if result is not None}

    async def _group_send(self, topic: str, frames: list[bytes]) -> None:
        try:
            await self.layer.group_send(group_name(topic), {"type": EVENT, "topic": topic, "frames": frames})
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(f"the channel layer is unreachable: {exc}") from exc
        self.stats["published"] += len(frames)
        self.stats["worker_messages"] += 1

    async def ais_member(self, group: str, channel: str) -> bool:
        """Whether `channel` holds a live lease in `group` (one read, no write): is that worker alive?"""
        name = group_name(group)
        if self._direct:
            layer: Any = self.layer  # channels-redis' layer: its shard and key helpers, as group_send uses them
            score = await layer.connection(layer.consistent_hash(name)).zscore(layer._group_key(name), channel)
            return score is not None and float(score) > time.time() - layer.group_expiry
        groups: Any = getattr(self.layer, "groups", {})  # the in-memory layer: group -> {channel: joined at}
        return channel in groups.get(name, {})

    async def asend(self, worker_channel: str, message: LayerMessage) -> None:
        await self.layer.send(worker_channel, message)

    async def areceive(self, worker_channel: str) -> LayerMessage:
        message: LayerMessage = await self.layer.receive(worker_channel)
        return message


def _settle(waiters: dict[str, list[asyncio.Future[None]]], failures: dict[str, BaseException]) -> None:
    """Resolve every publisher waiting on a round: with its topic's failure, or done."""
    for topic, topic_waiters in waiters.items():
        failure = failures.get(topic)
        for done in topic_waiters:
            if done.done():
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)


_dispatcher: Dispatcher | None = None


def get_dispatcher() -> Dispatcher:
    """The process's dispatcher over the default channel layer."""
    global _dispatcher
    layer = get_channel_layer()
    if _dispatcher is None or _dispatcher.layer is not layer:
        if layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no 'default' layer: the realtime platform needs one")
        _dispatcher = Dispatcher(layer)
    return _dispatcher


def is_worker_channel(name: str) -> bool:
    return name.startswith(WORKER_CHANNEL_PREFIX + ".") and "!" in name
