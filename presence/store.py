"""Where presence state lives: in this process's memory, or in Redis shared by every worker, with identical semantics.

Both stores apply the rules of `presence.status`; the Redis store does it in Lua, so each heartbeat batch and each
sweep is one atomic step: two workers sweeping at once can never both take the same member offline, and a
heartbeat can never slip between a sweep's read and its write.

Redis layout (under REDIS_KEY_PREFIX, realtime.stores; "livesite" by default):
- `livesite:presence:online`     sorted set, member -> last heartbeat (epoch seconds); online iff it is here.
- `livesite:presence:changed_at` hash, member -> time of its last transition (both directions).
- `livesite:presence:last_seen`  hash, member -> last heartbeat, written when it goes offline (online: the score).
The two hashes keep one field per member ever seen: a few dozen bytes each, bounded by the member table.
"""

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Protocol

from presence import status
from presence.status import OFFLINE, ONLINE, MemberStatus
from realtime import stores

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

# Returns the members that were not in the set, each with its new `changed_at`. ZADD GT moves an online member's
# score only forward, and its reply counts only ADDED members, so 1 means "was offline": one call per member.
_BEAT_LUA = """
local now = tonumber(ARGV[1])
local step = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV do
  local member = ARGV[i]
  if redis.call('ZADD', KEYS[1], 'GT', ARGV[1], member) == 1 then
    local changed = now
    local previous = tonumber(redis.call('HGET', KEYS[2], member))
    if previous and previous + step > now then changed = previous + step end
    local stamp = string.format('%.17g', changed)
    redis.call('HSET', KEYS[2], member, stamp)
    out[#out + 1] = member
    out[#out + 1] = stamp
  end
end
return out
"""

# Takes offline (atomically: read and remove in one step) at most ARGV[4] members whose last heartbeat is
# before ARGV[1] = now - offline_after; returns member, last_seen, changed_at for each. Numbers travel as
# '%.17g' strings: Lua numbers returned as such would be truncated to integers.
_SWEEP_LUA = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
local now = tonumber(ARGV[2])
local step = tonumber(ARGV[3])
local out = {}
for i = 1, #expired, 2 do
  local member, seen = expired[i], expired[i + 1]
  redis.call('ZREM', KEYS[1], member)
  local changed = now
  local previous = tonumber(redis.call('HGET', KEYS[2], member))
  if previous and previous + step > now then changed = previous + step end
  local stamp = string.format('%.17g', changed)
  redis.call('HSET', KEYS[2], member, stamp)
  redis.call('HSET', KEYS[3], member, seen)
  out[#out + 1] = member
  out[#out + 1] = seen
  out[#out + 1] = stamp
end
return out
"""

# One page of online members with their changed_at, read atomically so a pair never mixes two transitions.
_ONLINE_PAGE_LUA = """
local rows = redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  out[#out + 1] = rows[i]
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], rows[i]) or ''
end
return out
"""


class Store(Protocol):
    """What the services need from a store. Timestamps are epoch seconds; `now` always comes from the caller."""

    async def abeat(self, member_ids: list[int], now: float) -> list[MemberStatus]: ...

    async def asweep(self, now: float, offline_after: float) -> list[MemberStatus]: ...

    async def astatuses(self, member_ids: list[int]) -> list[MemberStatus]: ...

    async def aonline(self) -> list[MemberStatus]: ...

    async def aclaim(self, name: str, ttl_secs: float) -> bool: ...

    def statuses(self, member_ids: list[int]) -> list[MemberStatus]: ...


class MemoryStore:
    """The embedded default: the pure state machine behind a lock, for ONE process.

    Sync methods are safe from any thread (Django runs sync views in a thread beside the event loop); the async
    ones only wrap them, as nothing here waits. Sweeps scan every member: fine for one process's members.
    """

    def __init__(self) -> None:
        self._state: dict[int, status.MemberState] = {}
        self._lock = threading.Lock()
        self._claims: dict[str, float] = {}

    def beat(self, member_ids: list[int], now: float) -> list[MemberStatus]:
        with self._lock:
            self._state, newly_online = status.beat(self._state, member_ids, now)
        return newly_online

    def sweep(self, now: float, offline_after: float) -> list[MemberStatus]:
        with self._lock:
            self._state, newly_offline = status.sweep(self._state, now, offline_after)
        return newly_offline

    def statuses(self, member_ids: list[int]) -> list[MemberStatus]:
        with self._lock:
            return status.read(self._state, member_ids)

    def online(self) -> list[MemberStatus]:
        with self._lock:
            return status.online(self._state)

    def claim(self, name: str, ttl_secs: float, now: float) -> bool:
        with self._lock:
            if self._claims.get(name, float("-inf")) > now:
                return False
            self._claims[name] = now + ttl_secs
            return True

    async def abeat(self, member_ids: list[int], now: float) -> list[MemberStatus]:
        return self.beat(member_ids, now)

    async def asweep(self, now: float, offline_after: float) -> list[MemberStatus]:
        return self.sweep(now, offline_after)

    async def astatuses(self, member_ids: list[int]) -> list[MemberStatus]:
        return self.statuses(member_ids)

    async def aonline(self) -> list[MemberStatus]:
        return self.online()

    async def aclaim(self, name: str, ttl_secs: float) -> bool:
        # One process: the claim only spaces the runs out, so the loop's clock is good enough.
        return self.claim(name, ttl_secs, asyncio.get_running_loop().time())


class RedisStore:
    """State in Redis, shared by every worker; each heartbeat batch and sweep batch is one Lua call.

    Async methods use a client bound to the running event loop (made on first use in each loop); `statuses`
    uses a sync client, for Django's sync views.
    """

    def __init__(
        self, url: str | None = None, *, key_prefix: str | None = None, beat_batch: int = 1000, sweep_batch: int = 1000
    ) -> None:
        self.url = url
        key_prefix = key_prefix or stores.key("presence")
        self.online_key = f"{key_prefix}:online"
        self.changed_key = f"{key_prefix}:changed_at"
        self.last_seen_key = f"{key_prefix}:last_seen"
        self.claim_prefix = f"{key_prefix}:claim:"
        self.beat_batch = beat_batch
        self.sweep_batch = sweep_batch
        self._aclient: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    def _async(self) -> "aioredis.Redis":
        """The async client of the running loop (realtime.stores), with this store's scripts registered on it."""
        client = stores.aclient(self.url)
        if self._aclient is not client:
            self._aclient = client
            self._scripts = {
                "beat": client.register_script(_BEAT_LUA),
                "sweep": client.register_script(_SWEEP_LUA),
                "online": client.register_script(_ONLINE_PAGE_LUA),
            }
        return client

    def _sync(self) -> "redis.Redis":
        return stores.client(self.url)

    async def abeat(self, member_ids: list[int], now: float) -> list[MemberStatus]:
        self._async()
        members = list(dict.fromkeys(member_ids))
        newly_online: list[MemberStatus] = []
        for start in range(0, len(members), self.beat_batch):
            chunk = members[start : start + self.beat_batch]
            reply = await self._scripts["beat"](
                keys=[self.online_key, self.changed_key],
                args=[repr(now), repr(status.CHANGED_AT_STEP_SECS), *chunk],
            )
            newly_online.extend(
                MemberStatus(int(reply[i]), ONLINE, now, float(reply[i + 1])) for i in range(0, len(reply), 2)
            )
        return newly_online

    async def asweep(self, now: float, offline_after: float) -> list[MemberStatus]:
        self._async()
        # The cutoff is computed here, in the same double arithmetic as status.is_expired.
        cutoff = now - offline_after
        newly_offline: list[MemberStatus] = []
        while True:
            reply = await self._scripts["sweep"](
                keys=[self.online_key, self.changed_key, self.last_seen_key],
                args=[repr(cutoff), repr(now), repr(status.CHANGED_AT_STEP_SECS), self.sweep_batch],
            )
            newly_offline.extend(
                MemberStatus(int(reply[i]), OFFLINE, float(reply[i + 1]), float(reply[i + 2]))
                for i in range(0, len(reply), 3)
            )
            if len(reply) < 3 * self.sweep_batch:
                return newly_offline

    def _read_pipeline(self, pipe: Any, member_ids: list[int]) -> None:
        pipe.zmscore(self.online_key, member_ids)
        pipe.hmget(self.changed_key, member_ids)
        pipe.hmget(self.last_seen_key, member_ids)

    @staticmethod
    def _rows(member_ids: list[int], replies: list[Any]) -> list[MemberStatus]:
        scores, changed, last_seen = replies
        rows = []
        for member, score, stamp, seen in zip(member_ids, scores, changed, last_seen, strict=True):
            changed_at = None if stamp is None else float(stamp)
            if score is not None:
                rows.append(MemberStatus(member, ONLINE, float(score), changed_at))
            else:
                rows.append(MemberStatus(member, OFFLINE, None if seen is None else float(seen), changed_at))
        return rows

    async def astatuses(self, member_ids: list[int]) -> list[MemberStatus]:
        if not member_ids:
            return []
        # MULTI/EXEC: the three reads see one moment, so a status never pairs with another transition's stamp.
        async with self._async().pipeline(transaction=True) as pipe:
            self._read_pipeline(pipe, member_ids)
            return self._rows(member_ids, await pipe.execute())

    def statuses(self, member_ids: list[int]) -> list[MemberStatus]:
        if not member_ids:
            return []
        with self._sync().pipeline(transaction=True) as pipe:
            self._read_pipeline(pipe, member_ids)
            return self._rows(member_ids, pipe.execute())

    async def aonline(self) -> list[MemberStatus]:
        self._async()
        rows: list[MemberStatus] = []
        start = 0
        # Paged so Redis is never held for the whole set; a member moving between pages may be missed or seen
        # twice, which the next reconciliation absorbs.
        while True:
            reply = await self._scripts["online"](
                keys=[self.online_key, self.changed_key], args=[start, start + self.sweep_batch - 1]
            )
            for i in range(0, len(reply), 3):
                stamp = reply[i + 2]
                rows.append(MemberStatus(int(reply[i]), ONLINE, float(reply[i + 1]), float(stamp) if stamp else None))
            if len(reply) < 3 * self.sweep_batch:
                return rows
            start += self.sweep_batch

    async def aclaim(self, name: str, ttl_secs: float) -> bool:
        """Whether this caller won `name` for `ttl_secs` (SET NX PX): one worker of the cluster per period."""
        return bool(await self._async().set(self.claim_prefix + name, "1", nx=True, px=max(1, int(ttl_secs * 1000))))

    async def aclose(self) -> None:
        # The clients are shared (realtime.stores): forget them here, never close them under the others.
        self._aclient = None
        self._scripts = {}


def new_store(*, beat_batch: int = 1000, sweep_batch: int = 1000) -> MemoryStore | RedisStore:
    """A Redis store when REDIS_URL is set (realtime.stores), else an in-memory one."""
    if stores.url():
        return RedisStore(beat_batch=beat_batch, sweep_batch=sweep_batch)
    return MemoryStore()
