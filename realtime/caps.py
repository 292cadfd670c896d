"""Caps on streams open at once: per client address and per member, across every worker.

A rate limit (realtime.limits) bounds how fast streams are opened; a cap bounds how many are held: 300
anonymous streams from one address are 300 sockets, buffers and registrations on the workers.

With REDIS_URL each holder (`address:<ip>`, `member:<id>`) is a sorted set of `<worker channel>|<connection
id>`: a stream is added when it opens and removed when it closes, and the check and the add are one script,
so two workers cannot both take the last place. A worker that dies (SIGKILL) cannot remove its streams; each
worker therefore marks itself alive in Redis every BEAT_SECS (for ALIVE_SECS), and when a holder is full, the
places held by workers that stopped beating are given back before the stream is refused. On the embedded
default the counts live in this process.
"""

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from realtime import conf, stores

logger = logging.getLogger(__name__)

BEAT_SECS = 2.0
ALIVE_SECS = 3 * BEAT_SECS
# A backstop: a holder's set expires a day after its last stream opened, whatever else went wrong.
HOLDER_TTL_SECS = 86_400

# KEYS: the holders' sets; ARGV: the entry, then each holder's cap (0: none). Returns 0 when added to every
# set, else the 1-based index of the first full holder (nothing added).
_ACQUIRE_LUA = """
for i, key in ipairs(KEYS) do
    local cap = tonumber(ARGV[i + 1])
    if cap > 0 and redis.call('ZCARD', key) >= cap then
        return i
    end
end
for i, key in ipairs(KEYS) do
    redis.call('ZADD', key, 0, ARGV[1])
    redis.call('EXPIRE', key, ARGV[#ARGV])
end
return 0
"""


class CapReached(Exception):
    """The holder already has as many open streams as it may."""

    def __init__(self, scope: str, cap: int) -> None:
        who = "this address" if scope == "address" else "this member"
        setting = "REALTIME_MAX_STREAMS_PER_ADDRESS" if scope == "address" else "REALTIME_MAX_STREAMS_PER_MEMBER"
        super().__init__(f"{who} already holds {cap} open streams ({setting}): close one before opening another")
        self.scope = scope
        self.cap = cap


@dataclass(frozen=True, slots=True)
class Holders:
    """Who holds a stream, and the caps that apply: (scope, who, cap) for each counted holder."""

    entries: tuple[tuple[str, str, int], ...]

    @classmethod
    def of(cls, address: str, member_id: int | None) -> "Holders":
        caps = conf.get("MAX_STREAMS")
        entries = [("address", address, int(caps.get("address", 0)))]
        if member_id is not None:
            entries.append(("member", str(member_id), int(caps.get("member", 0))))
        return cls(tuple(entry for entry in entries if entry[2] > 0))


class MemoryCaps:
    """The embedded default: one process holds every stream."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    async def aacquire(self, holders: Holders, worker: str, connection_id: str) -> None:
        with self._lock:
            for scope, who, cap in holders.entries:
                if len(self._held.get((scope, who), ())) >= cap:
                    raise CapReached(scope, cap)
            for scope, who, _ in holders.entries:
                self._held.setdefault((scope, who), set()).add(connection_id)

    async def arelease(self, holders: Holders, worker: str, connection_id: str) -> None:
        with self._lock:
            for scope, who, _ in holders.entries:
                held = self._held.get((scope, who))
                if held is not None:
                    held.discard(connection_id)
                    if not held:
                        del self._held[(scope, who)]

    async def abeat(self, worker: str) -> None:
        return None


class RedisCaps:
    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._script: Any = None
        self.stats = {"reclaimed": 0}

    async def aacquire(self, holders: Holders, worker: str, connection_id: str) -> None:
        entry = f"{worker}|{connection_id}"
        full = await self._acquire(holders, entry)
        if full is None:
            return
        # Full: perhaps of places held by a worker that died without giving them back.
        if await self._reclaim(_key(*holders.entries[full][:2])):
            full = await self._acquire(holders, entry)
        if full is not None:
            scope, _, cap = holders.entries[full]
            raise CapReached(scope, cap)

    async def arelease(self, holders: Holders, worker: str, connection_id: str) -> None:
        entry = f"{worker}|{connection_id}"
        async with stores.aclient(self.url).pipeline(transaction=False) as pipe:
            for scope, who, _ in holders.entries:
                pipe.zrem(_key(scope, who), entry)
            await pipe.execute()

    async def abeat(self, worker: str) -> None:
        await stores.aclient(self.url).set(_alive_key(worker), b"1", ex=int(ALIVE_SECS))

    async def _acquire(self, holders: Holders, entry: str) -> int | None:
        client = stores.aclient(self.url)
        if self._script is None:
            self._script = client.register_script(_ACQUIRE_LUA)
        keys = [_key(scope, who) for scope, who, _ in holders.entries]
        args = [entry, *(cap for _, _, cap in holders.entries), HOLDER_TTL_SECS]
        full = int(await self._script(keys=keys, args=args, client=client))
        return None if full == 0 else full - 1

    async def _reclaim(self, key: str) -> int:
        """Give back the places of workers that stopped beating; returns how many."""
        client = stores.aclient(self.url)
        members: list[Any] = await client.zrange(key, 0, -1)  # bytes: the client does not decode
        entries = [bytes(entry).decode() for entry in members]
        workers = sorted({entry.partition("|")[0] for entry in entries})
        alive = await client.mget([_alive_key(worker) for worker in workers]) if workers else []
        dead = {worker for worker, beat in zip(workers, alive, strict=True) if beat is None}
        stale = [entry for entry in entries if entry.partition("|")[0] in dead]
        if stale:
            await client.zrem(key, *stale)
            self.stats["reclaimed"] += len(stale)
            logger.info("gave back %d stream places held by stopped workers %s", len(stale), sorted(dead))
        return len(stale)


def _key(scope: str, who: str) -> str:
    return stores.key("streams", scope, who)


def _alive_key(worker: str) -> str:
    return stores.key("alive", worker)


_caps: stores.Slot[MemoryCaps | RedisCaps] = stores.Slot(memory=MemoryCaps, redis=RedisCaps)


def get() -> MemoryCaps | RedisCaps:
    return _caps.get()


async def abeat_forever(worker: str) -> None:
    """A worker's task: say every BEAT_SECS that its streams' places are still held."""
    caps = get()
    while True:
        try:
            await caps.abeat(worker)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Redis away: the next beat retries; other workers keep this one's places for ALIVE_SECS.
            logger.warning("worker %s could not renew its stream places: %s", worker, exc)
        await asyncio.sleep(BEAT_SECS)
