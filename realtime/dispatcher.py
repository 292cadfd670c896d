"""Level 1 of the fan-out: topic -> the workers hosting its subscribers, kept in the channel layer.

The only module that talks to the channel layer. Each topic is a channel-layer group whose members are
WORKER channels (one per process, never one per connection), so a publish costs one message per worker
that hosts subscribers, and none to the others. Memberships are leases: the layer's `group_expiry` is
set to REALTIME LEASE_SECS and each worker re-adds its topics every third of it, so a worker that dies
without cleaning up (SIGKILL) drops out of every group within one lease.

On channels-redis, a round of publishes runs one script per Redis shard that reads the members of all its
topics AND gives each event its topic's next offset and appends it to the topic's history (realtime.history),
then sends each hosting worker ONE message carrying every event for it, whatever the number of topics:
`group_send` would cost four round trips per topic, which caps a dispatcher far below 5,000 events/s when
events go to many different topics. Membership follows `group_send`'s own rule (members older than
`group_expiry` are pruned and ignored), so the two paths agree. Other layers (the in-memory one of the
embedded default) use `group_send`, with the history kept in this process.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError, ResponseError

from realtime import history
from realtime.events import Template, frame_at
from realtime.metrics import Histogram
from realtime.topics import group_name

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

logger = logging.getLogger(__name__)

WORKER_CHANNEL_PREFIX = "realtime.worker"
EVENT = "rt.event"  # {"topic", "epoch", "first", "frames"}: one topic's events (group_send path)
EVENTS = "rt.events"  # {"events": [[topic, epoch, first, frames], ...]}: a round's events for one worker
RPC = "rt.rpc"
REPLY = "rt.reply"

# A channel-layer message: a msgpack-able dict whose other keys depend on its "type" (above). What comes off
# the layer is whatever another worker sent, and channels is untyped: Any is that boundary.
LayerMessage = dict[str, Any]


class DispatchUnavailable(Exception):
    """The channel layer (Redis) could not be reached: nothing was sent."""


# One call per Redis shard per round: for each topic, drop the members whose lease ran out (as channels-redis'
# group_send does) and read the rest, then give the round's events of that topic their positions and append
# them to its history (realtime.history has the layout). A single script instead of commands per topic: the
# client side of those was 23 % of a dispatcher's CPU at 8,000 events/s over 4,040 topics (docs/benchmarks.md),
# and history costs no extra round trip.
# Each topic kept is first owned by the serving Redis server (realtime.history.OWN_LUA: after a failover, a new
# epoch).
# KEYS: per topic, its group key, then its history's meta hash and list when it keeps a history.
# ARGV: stale-before (s), now (ms), a new epoch for histories that have none, size, age (ms), list TTL (s),
#       meta TTL (s); then per topic: its name, 1 or 0 (history kept), n, then n (head, body) template pairs
#       when kept. Returns per topic {members, epoch, first offset} ('' and 0 without history).
# Builds each frame exactly as realtime.events.frame_at does.
_ROUND_LUA = (
    history.OWN_LUA
    + """
local stale, now, fresh_epoch = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local size, age, list_ttl, meta_ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7]
local stamp = string.format('%d', now)
local cutoff = now - age
local out = {}
local k, a = 1, 8
while k <= #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[k], 0, stale)
    local members = redis.call('ZRANGE', KEYS[k], 0, -1)
    local topic, kept, n = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    a = a + 3
    if kept == '1' then
        local meta, list = KEYS[k + 1], KEYS[k + 2]
        k = k + 3
        own(meta, list, fresh_epoch, meta_ttl, true)
        local epoch = redis.call('HGET', meta, 'epoch')
        local first = redis.call('HINCRBY', meta, 'seq', n) - n + 1
        local tag = 'id: ' .. topic .. ':' .. epoch .. ':'
        local tail = ',"epoch":"' .. epoch .. '","offset":'
        for i = 0, n - 1 do
            local at = string.format('%d', first + i)
            redis.call('RPUSH', list, stamp, table.concat({ARGV[a], tag, at, '\\n', ARGV[a + 1], tail, at, '}\\n\\n'}))
            a = a + 2
        end
        redis.call('LTRIM', list, -2 * size, -1)
        while true do
            local oldest = redis.call('LINDEX', list, 0)
            if oldest and tonumber(oldest) < cutoff then redis.call('LPOP', list, 2) else break end
        end
        redis.call('EXPIRE', list, list_ttl)
        redis.call('EXPIRE', meta, meta_ttl)
        out[#out + 1] = {members, epoch, first}
    else
        k = k + 1
        out[#out + 1] = {members, '', 0}
    end
end
return out
"""
)

# A round's messages to the workers hosting its topics, as channels-redis' `send` writes each one (expired messages
# pruned, the capacity checked, ZADD at `now`, the key's expiry reset) but for every worker of one shard in ONE
# call: `send` makes four round trips per message, which with single-event publishes (a round or two per few
# events) was most of a publishing worker's Redis client time (docs/benchmarks.md, A.14).
# KEYS: the channel keys. ARGV: stale-before (s), now (s), expiry (s), then per key its capacity and message.
# Returns per key 1 (sent) or 0 (full: `send` would raise ChannelFull).
_SEND_LUA = """
local stale, now, expiry = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, stale)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') >= tonumber(ARGV[2 + 2 * i]) then
        out[i] = 0
    else
        redis.call('ZADD', KEYS[i], now, ARGV[3 + 2 * i])
        redis.call('EXPIRE', KEYS[i], expiry)
        out[i] = 1
    end
end
return out
"""

# A worker joins a topic's group (as group_add does) and learns the topic's position at that instant, in one
# atomic step: every event it receives from then on has a greater offset, every earlier one a smaller.
# KEYS: the group, the topic's meta hash and list. ARGV: the worker channel, now (s), the group's TTL (s), a new
# epoch and the meta TTL (s) for OWN_LUA.
_REGISTER_LUA = (
    history.OWN_LUA
    + """
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
own(KEYS[2], KEYS[3], ARGV[4], ARGV[5], false)
return redis.call('HMGET', KEYS[2], 'epoch', 'seq')
"""
)


# What a round carries per topic: event templates (realtime.events), which get positions and history, or raw
# frames (the control group's orders), delivered as they are.
Outgoing = Template | bytes


# Rounds start at most this often: the first publish after a quiet spell goes at once, later ones wait for the
# next tick and share its round. Without it a worker taking single-event POSTs at 2,500/s ran a round for every
# one or two events, and each round costs every hosting worker a channel-layer message to receive: the receivers
# fell seconds behind (docs/benchmarks.md, A.14). At most ROUND_SECS of added latency, and only under load.
ROUND_SECS = 0.010
# Messages taken off the worker channel per Redis call, and how long one call blocks when none is waiting (as
# channels-redis' own receive: its redis-py socket timeout is set above it in livesite/settings.py).
RECEIVE_BATCH = 100
RECEIVE_BLOCK_SECS = 5


class Dispatcher:
    """Registration, delivery and history over one channel layer. Async; one event loop at a time.

    Publishing is group-commit: while one round of sends is in flight, and until `round_secs` after it began,
    new events queue up, and the next round sends every frame pending for a topic in ONE message per hosting
    worker, in call order. An idle dispatcher sends at once (no added latency); a busy one sends fewer, larger
    messages, which is what keeps Redis round trips per event falling as the publish rate rises.
    """

    def __init__(
        self,
        layer: BaseChannelLayer,
        *,
        settings: history.Settings | None = None,
        clock: Callable[[], float] = time.time,
        round_secs: float = ROUND_SECS,
    ) -> None:
        self.layer = layer
        self.clock = clock
        self.round_secs = round_secs
        self._round_started = float("-inf")  # time.monotonic() of the last round's start
        self.stats = {
            "published": 0,
            "worker_messages": 0,
            "lookups": 0,
            "dropped_worker_full": 0,
            "registrations": 0,
            "deregistrations": 0,
            "failed_rounds": 0,
            "failed_worker_sends": 0,
            "history_reads": 0,
            "history_reads_shared": 0,
        }
        self._direct = isinstance(layer, RedisChannelLayer)
        self.history = settings or history.settings()
        # The embedded default's history lives in this process, with the in-memory layer.
        self.memory = None if self._direct else history.MemoryHistory(self.history, clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, list[Outgoing]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._round_script: AsyncScript | None = None
        self._send_script: AsyncScript | None = None
        self._register_script: AsyncScript | None = None
        self._read_script: AsyncScript | None = None
        self._reads: dict[tuple[str, history.Position], asyncio.Future[history.Replay]] = {}
        self._inboxes: dict[str, deque[LayerMessage]] = {}
        self._receiving = asyncio.Lock()
        self._bzmpop = True  # until Redis says it has no BZMPOP (Redis < 7)
        self.publish_seconds = Histogram()

    async def anew_worker_channel(self) -> str:
        channel: str = await self.layer.new_channel(WORKER_CHANNEL_PREFIX)
        return channel

    async def aregister(self, topic: str, worker_channel: str) -> history.Position | None:
        """Add (or refresh the lease of) `worker_channel` as a host of `topic`.

        Returns the topic's position at that instant (None without history): the worker receives every event
        after it, and none before.
        """
        name = group_name(topic)
        self.stats["registrations"] += 1
        if not self._direct:
            await self.layer.group_add(name, worker_channel)
            return self.memory.position(topic) if self.memory and self.history.keeps(topic) else None
        layer: Any = self.layer
        connection = layer.connection(layer.consistent_hash(name))
        if self._register_script is None:
            self._register_script = connection.register_script(_REGISTER_LUA)
        epoch, seq = await self._register_script(
            keys=[layer._group_key(name), *history.redis_keys(layer.prefix, topic)],
            args=[
                worker_channel,
                time.time(),
                layer.group_expiry,
                history.new_epoch(),
                history.expiry_secs(self.history.meta_secs),
            ],
            client=connection,
        )
        if not self.history.keeps(topic):
            return None
        return history.Position(epoch.decode() if epoch else history.NO_EPOCH, int(seq or 0))

    async def arefresh(self, topics: list[str], worker_channel: str) -> None:
        """Renew the leases of `worker_channel` on many topics: one pipelined request per Redis shard.

        Exactly what `group_add` does per topic (a fresh score, the key's expiry reset), without a round trip
        per topic: with one topic per connection, per-topic refreshes grew with the connections.
        """
        if not self._direct:
            for topic in topics:
                await self.layer.group_add(group_name(topic), worker_channel)
            self.stats["registrations"] += len(topics)
            return
        layer: Any = self.layer
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

    async def asend_events(self, events: list[tuple[str, Outgoing]]) -> None:
        """Send events, in order, in as few rounds as possible (one when idle), each appended to its topic's
        history in the same round.

        Returns once every event is in its history and handed to the layer; raises DispatchUnavailable if the
        channel layer could not be reached (nothing of that round was stored or sent), or whatever else failed
        the round.
        """
        if not events:
            return
        started = time.perf_counter()
        loop = self._bound_loop()
        waiting = []
        for topic, outgoing in events:
            done: asyncio.Future[None] = loop.create_future()
            self._pending.setdefault(topic, []).append(outgoing)
            self._waiters.setdefault(topic, []).append(done)
            waiting.append(done)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        # Every future of a failed round carries the same error: retrieve them all, raise it once.
        results = await asyncio.gather(*waiting, return_exceptions=True)
        self.publish_seconds.observe(time.perf_counter() - started)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _bound_loop(self) -> asyncio.AbstractEventLoop:
        """The running loop, this dispatcher's from now on; rounds and reads of a previous loop are dropped."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests, management commands): state of a dead loop is meaningless here.
            self._loop, self._pending, self._waiters, self._flusher, self._reads = loop, {}, {}, None, {}
            self._inboxes, self._receiving = {}, asyncio.Lock()
        return loop

    async def _flush(self) -> None:
        while self._pending:
            wait_secs = self._round_started + self.round_secs - time.monotonic()
            if wait_secs > 0:
                try:
                    await asyncio.sleep(wait_secs)
                except asyncio.CancelledError:
                    stopped = DispatchUnavailable("the dispatcher was stopped")
                    _settle(self._waiters, dict.fromkeys(self._waiters, stopped))
                    self._pending, self._waiters = {}, {}
                    raise
            self._round_started = time.monotonic()
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

    async def _send_round(self, pending: dict[str, list[Outgoing]]) -> dict[str, BaseException]:
        """One script per shard (members + history), then one message per hosting worker (channels-redis)."""
        try:
            rows = await self._round(pending)
        except (RedisError, OSError) as exc:
            failure = DispatchUnavailable(f"the channel layer is unreachable: {exc}")
            return dict.fromkeys(pending, failure)
        per_worker: dict[str, list[list[Any]]] = {}  # [topic, epoch, first offset, frames]: msgpack has no tuples
        for topic, outgoing in pending.items():
            members, epoch, first = rows[topic]
            entry = [topic, epoch, first, _frames(topic, outgoing, epoch, first)]
            for channel in members:
                per_worker.setdefault(channel, []).append(entry)
        results = await self._send_messages(
            {channel: {"type": EVENTS, "events": events} for channel, events in per_worker.items()}
        )
        for channel, result in zip(per_worker, results, strict=True):
            if isinstance(result, ChannelFull):
                # That worker has stopped reading (stuck or dead, its lease not yet expired): the others got theirs.
                self.stats["dropped_worker_full"] += 1
                logger.warning("worker channel %s is full: a round of events was dropped for it", channel)
            elif isinstance(result, BaseException):
                # The events are in their history already: the worker finds the hole at the topic's next event
                # (or its repair after a fault) and fills it from there. Answering 503 would make the publisher
                # send them a second time.
                self.stats["failed_worker_sends"] += 1
                logger.warning("a round of events could not be sent to worker %s: %s", channel, result)
        self.stats["published"] += sum(len(outgoing) for outgoing in pending.values())
        self.stats["worker_messages"] += len(per_worker)
        self.stats["lookups"] += 1
        return {}

    async def _send_messages(self, messages: dict[str, LayerMessage]) -> list[BaseException | None]:
        """Each message onto its worker channel (channels-redis), one script call per Redis shard; per message in
        order: None (sent), ChannelFull, or the error that kept its shard from being reached."""
        layer: Any = self.layer  # channels-redis: its shards, key format, serializer and capacities, as send uses them
        by_shard: dict[int, list[str]] = {}
        others = []
        for channel in messages:
            if "!" in channel:
                by_shard.setdefault(layer.consistent_hash(channel), []).append(channel)
            else:
                others.append(channel)  # Not a worker channel: nothing sends events there, but `send` knows how.
        now = time.time()
        head = [int(now) - int(layer.expiry), now, int(layer.expiry)]

        async def run(index: int, channels: list[str]) -> list[int]:
            keys: list[str] = []
            args: list[Any] = list(head)
            for channel in channels:
                keys.append(layer.prefix + layer.non_local_name(channel))
                message = {**messages[channel], "__asgi_channel__": channel}
                args += [layer.get_capacity(channel), layer.serialize(message)]
            connection = layer.connection(index)
            if self._send_script is None:
                self._send_script = connection.register_script(_SEND_LUA)
            sent: list[int] = await self._send_script(keys=keys, args=args, client=connection)
            return sent

        shards = list(by_shard.items())
        results = await asyncio.gather(
            *(run(index, channels) for index, channels in shards),
            *(layer.send(channel, messages[channel]) for channel in others),
            return_exceptions=True,
        )
        outcome: dict[str, BaseException | None] = {}
        for (_, channels), result in zip(shards, results, strict=False):
            for position, channel in enumerate(channels):
                if isinstance(result, BaseException):
                    outcome[channel] = result
                else:
                    outcome[channel] = None if int(result[position]) else ChannelFull()
        for channel, result in zip(others, results[len(shards) :], strict=True):
            outcome[channel] = result if isinstance(result, BaseException) else None
        return [outcome[channel] for channel in messages]

    async def _round(self, pending: dict[str, list[Outgoing]]) -> dict[str, tuple[list[str], str, int]]:
        """topic -> (hosting worker channels, epoch, first offset of its events), the events stored."""
        layer: Any = self.layer  # channels-redis: its shards and key format, as group_send uses them
        settings = self.history
        now = self.clock()
        by_shard: dict[int, list[str]] = {}
        for topic in pending:
            by_shard.setdefault(layer.consistent_hash(group_name(topic)), []).append(topic)
        head = [
            int(time.time()) - layer.group_expiry,  # leases are stamped with the real clock
            int(now * 1000),
            history.new_epoch(),
            settings.size,
            int(settings.secs * 1000),
            history.expiry_secs(settings.secs),
            history.expiry_secs(settings.meta_secs),
        ]

        async def run(index: int, shard_topics: list[str]) -> list[list[Any]]:
            keys: list[str | bytes] = []
            args: list[Any] = list(head)
            for topic in shard_topics:
                outgoing = pending[topic]
                keys.append(layer._group_key(group_name(topic)))
                templates = [item for item in outgoing if isinstance(item, Template)]
                if settings.keeps(topic) and len(templates) == len(outgoing):
                    keys.extend(history.redis_keys(layer.prefix, topic))
                    args += [topic, 1, len(outgoing)]
                    for template in templates:
                        args += [template.head, template.body]
                else:
                    args += [topic, 0, len(outgoing)]
            connection = layer.connection(index)
            if self._round_script is None:
                self._round_script = connection.register_script(_ROUND_LUA)
            rows: list[list[Any]] = await self._round_script(keys=keys, args=args, client=connection)
            return rows

        shards = list(by_shard.items())
        results = await asyncio.gather(*(run(index, shard_topics) for index, shard_topics in shards))
        found: dict[str, tuple[list[str], str, int]] = {}
        for (_, shard_topics), rows in zip(shards, results, strict=True):
            for topic, (members, epoch, first) in zip(shard_topics, rows, strict=True):
                found[topic] = (
                    [channel.decode() for channel in members],
                    epoch.decode() if isinstance(epoch, bytes) else str(epoch),
                    int(first),
                )
        return found

    async def _group_send_each(self, pending: dict[str, list[Outgoing]]) -> dict[str, BaseException]:
        topics = list(pending)
        results = await asyncio.gather(
            *(self._group_send(topic, pending[topic]) for topic in topics), return_exceptions=True
        )
        return {topic: result for topic, result in zip(topics, results, strict=True) if result is not None}

    async def _group_send(self, topic: str, outgoing: list[Outgoing]) -> None:
        epoch, first = history.NO_EPOCH, 0
        memory = self.memory
        templates = [item for item in outgoing if isinstance(item, Template)]
        if memory is not None and self.history.keeps(topic) and len(templates) == len(outgoing):
            epoch, first, frames = memory.append(topic, templates)
        else:
            frames = _frames(topic, outgoing, epoch, first)
        message = {"type": EVENT, "topic": topic, "epoch": epoch, "first": first, "frames": frames}
        try:
            await self.layer.group_send(group_name(topic), message)
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(f"the channel layer is unreachable: {exc}") from exc
        self.stats["published"] += len(frames)
        self.stats["worker_messages"] += 1

    async def aread_history(self, since: dict[str, history.Position]) -> dict[str, history.Replay]:
        """What each topic's history holds after the given position: one script call per Redis shard.

        Reads of the same (topic, position) in flight at once share one answer: after a worker dies, thousands
        of clients resume the same broadcast topic from the same last event within a second.
        Raises RedisError/OSError when the store cannot be read.
        """
        loop = self._bound_loop()
        shared: dict[str, asyncio.Future[history.Replay]] = {}
        mine: dict[str, asyncio.Future[history.Replay]] = {}
        for topic, position in since.items():
            inflight = self._reads.get((topic, position))
            if inflight is not None:
                shared[topic] = inflight
            else:
                mine[topic] = self._reads[(topic, position)] = loop.create_future()
        self.stats["history_reads"] += len(mine)
        self.stats["history_reads_shared"] += len(shared)
        if mine:
            try:
                replays = await self._read({topic: since[topic] for topic in mine})
            except BaseException as exc:
                for future in mine.values():
                    future.set_exception(exc)
                    future.exception()  # Retrieved: whoever shared it gets it too.
                raise
            finally:
                for topic in mine:
                    self._reads.pop((topic, since[topic]), None)
            for topic, future in mine.items():
                future.set_result(replays[topic])
        out = {topic: future.result() for topic, future in mine.items()}
        for topic, future in shared.items():
            out[topic] = await asyncio.shield(future)
        return out

    async def _read(self, since: dict[str, history.Position]) -> dict[str, history.Replay]:
        if self.memory is not None:
            return {topic: self.memory.read(topic, position) for topic, position in since.items()}
        layer: Any = self.layer
        by_shard: dict[int, list[str]] = {}
        for topic in since:
            by_shard.setdefault(layer.consistent_hash(group_name(topic)), []).append(topic)

        async def read(index: int, shard_topics: list[str]) -> list[list[Any]]:
            keys: list[str] = []
            args: list[Any] = [history.new_epoch(), history.expiry_secs(self.history.meta_secs)]
            for topic in shard_topics:
                keys.extend(history.redis_keys(layer.prefix, topic))
                args += [since[topic].epoch, since[topic].offset]
            connection = layer.connection(index)
            if self._read_script is None:
                self._read_script = connection.register_script(history.READ_LUA)
            rows: list[list[Any]] = await self._read_script(keys=keys, args=args, client=connection)
            return rows

        shards = list(by_shard.items())
        results = await asyncio.gather(*(read(index, shard_topics) for index, shard_topics in shards))
        return {
            topic: history.replay_from_row(row)
            for (_, shard_topics), rows in zip(shards, results, strict=True)
            for topic, row in zip(shard_topics, rows, strict=True)
        }

    async def ahosts(self, topic: str) -> list[str]:
        """The worker channels holding a live lease on `topic` (a read, nothing pruned): who hosts it now."""
        name = group_name(topic)
        if self._direct:
            layer: Any = self.layer
            members: list[Any] = await layer.connection(layer.consistent_hash(name)).zrangebyscore(
                layer._group_key(name), time.time() - layer.group_expiry, "+inf"
            )
            return sorted(bytes(member).decode() for member in members)
        groups: Any = getattr(self.layer, "groups", {})
        return sorted(groups.get(name, {}))

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
        """The next message on this process's worker channel (the worker's receive loop is its one reader).

        On channels-redis, up to RECEIVE_BATCH waiting messages are taken in one ZPOPMIN, and Redis is blocked
        on (BZPOPMIN) only when none is waiting. The layer's own `receive` costs four round trips per message
        (its crash-safety backup queue included), each waiting for a turn of the event loop: a worker also
        serving thousands of POSTs a second received a few dozen messages a second that way, and delivered
        events seconds late (docs/benchmarks.md, A.14). What that backup queue guarded, a message popped by a
        receive cancelled before it returned, can only happen here when the worker stops; a lost event message is
        found as a hole by the sequencer and filled from the history, a lost reply times out its RPC.
        """
        if not self._direct:
            message: LayerMessage = await self.layer.receive(worker_channel)
            return message
        self._bound_loop()
        inbox = self._inboxes.setdefault(worker_channel, deque())
        while not inbox:
            # One Redis read at a time: every channel of this process shares one key, and what a read takes off
            # goes to each message's own channel. (A process has one worker channel; tests may make several.)
            async with self._receiving:
                if not inbox:
                    await self._fill_inboxes(worker_channel)
        return inbox.popleft()

    async def _fill_inboxes(self, channel: str) -> None:
        layer: Any = self.layer  # channels-redis: the key, shard and serializer its own receive uses
        key = layer.prefix + layer.non_local_name(channel)
        connection = layer.connection(layer.consistent_hash(channel))
        if self._bzmpop:
            # Redis >= 7: up to RECEIVE_BATCH waiting messages, or block until one comes, in ONE call. Messages
            # arrive a round at a time, so the pair below costs two calls per message (a ZPOPMIN that finds
            # nothing, then the BZPOPMIN that waits); each redis-py call is about 0.1 ms of the worker's CPU.
            try:
                found = await connection.bzmpop(RECEIVE_BLOCK_SECS, 1, [key], min=True, count=RECEIVE_BATCH)
            except ResponseError as exc:
                reason = str(exc).lower()
                if "unknown command" not in reason and "noperm" not in reason:
                    raise
                # Redis < 7, or an ACL that allows only the older commands: ZPOPMIN, then BZPOPMIN when none waits.
                logger.info("worker channel %s read without BZMPOP (%s)", channel, exc)
                self._bzmpop = False
            else:
                if found is None:
                    return
                members = [row[0] for row in found[1]]
        if not self._bzmpop:
            members = [row[0] for row in await connection.zpopmin(key, RECEIVE_BATCH)]
            if not members:
                found = await connection.bzpopmin(key, timeout=RECEIVE_BLOCK_SECS)
                if found is None:
                    return
                members = [found[1]]
        for member in members:
            message = layer.deserialize(member)
            self._inboxes.setdefault(message.pop("__asgi_channel__", channel), deque()).append(message)


def _frames(topic: str, outgoing: list[Outgoing], epoch: str, first: int) -> list[bytes]:
    """The frames of one topic's events in a round, at their positions (none without history)."""
    return [
        item if isinstance(item, bytes) else frame_at(item, topic, epoch, first + index if epoch else 0)
        for index, item in enumerate(outgoing)
    ]


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
