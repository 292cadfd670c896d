"""Who is typing where: throttled starts, explicit stops and expiry, decided atomically across workers.

A member's typing mark in a conversation lives until `now + timeout` and is refreshed by every call that says
she is still typing. The store answers whether each call should be announced:
- `start` announces at most once per `throttle_secs` (the time of the last announced start is shared by every
  worker); a start inside that window only refreshes a mark that was announced, so viewers are never told of
  a mark they did not see start. A start right after a stop is therefore not shown at once: the caller is
  told in how many seconds a start will be announced, and the page calls again then if she still types;
- `stop` and `take_expired` remove marks; each removed mark is returned to exactly one caller (a ZREM, or
  one script per sweep), so each announced start is followed by exactly one stop, by whichever worker
  removed it.
Times are wall-clock seconds passed in as `now` (workers' clocks must agree, as NTP keeps them; the store
never reads a clock of its own).

Failure model: a worker killed between the store's answer and its publish loses that one event; a stop lost
so is repaired by no one, so pages also hide an indicator by themselves when it is not refreshed.
"""

import threading
from typing import Any, NamedTuple, Protocol

from realtime import stores


class Started(NamedTuple):
    """What one start call did: whether it announced a start, whether others see her typing now, and, when they
    do not (a start right after a stop, inside the throttle), in how many seconds a start will be announced."""

    announced: bool
    shown: bool
    retry_in_secs: float = 0.0


class Store(Protocol):
    def start(
        self, conversation_id: int, member_id: int, *, now: float, throttle_secs: float, timeout_secs: float
    ) -> Started:
        """Mark (or keep) her typing until now + timeout_secs; whether this call should announce it."""

    def stop(self, conversation_id: int, member_id: int) -> bool:
        """Remove her mark; True if there was one (announce the stop)."""

    async def atake_expired(self, now: float, limit: int) -> list[tuple[int, int]]:
        """Remove and return up to `limit` (conversation, member) marks that expired by `now`."""


class MemoryStore:
    """One process (the embedded default)."""

    def __init__(self) -> None:
        self._until: dict[tuple[int, int], float] = {}  # announced marks -> when they expire
        self._announced: dict[tuple[int, int], float] = {}  # -> when the last start was announced
        self._lock = threading.Lock()

    def start(
        self, conversation_id: int, member_id: int, *, now: float, throttle_secs: float, timeout_secs: float
    ) -> Started:
        key = (conversation_id, member_id)
        with self._lock:
            last = self._announced.get(key)
            if last is None or now - last >= throttle_secs:
                self._announced[key] = now
                self._until[key] = now + timeout_secs
                return Started(announced=True, shown=True)
            if key in self._until:
                self._until[key] = now + timeout_secs
                return Started(announced=False, shown=True)
            return Started(announced=False, shown=False, retry_in_secs=last + throttle_secs - now)

    def stop(self, conversation_id: int, member_id: int) -> bool:
        with self._lock:
            return self._until.pop((conversation_id, member_id), None) is not None

    async def atake_expired(self, now: float, limit: int) -> list[tuple[int, int]]:
        return self.take_expired(now, limit)

    def take_expired(self, now: float, limit: int) -> list[tuple[int, int]]:
        with self._lock:
            expired = sorted((until, key) for key, until in self._until.items() if until <= now)[:limit]
            for _, key in expired:
                del self._until[key]
            # Bounded: throttle windows that ended say nothing any more.
            for key in [key for key, at in self._announced.items() if key not in self._until and at < now - 60]:
                del self._announced[key]
            return [key for _, key in expired]


# KEYS: the marks' sorted set, this member's throttle key (when her last start was announced). ARGV: member,
# now, throttle (s), timeout (s), the throttle key's lifetime (ms, only so idle keys go away).
_START_LUA = """
local last = redis.call('GET', KEYS[2])
local now = tonumber(ARGV[2])
local throttle = tonumber(ARGV[3])
local expiry = now + tonumber(ARGV[4])
if (not last) or now - tonumber(last) >= throttle then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
  redis.call('ZADD', KEYS[1], expiry, ARGV[1])
  return {1, 1, '0'}
end
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', expiry, ARGV[1])
  return {0, 1, '0'}
end
return {0, 0, tostring(tonumber(last) + throttle - now)}
"""

# KEYS: the marks' sorted set. ARGV: now, limit. One script: two sweepers never take the same mark.
_TAKE_EXPIRED_LUA = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #items > 0 then
  redis.call('ZREM', KEYS[1], unpack(items))
end
return items
"""


def _marks_key() -> str:
    return stores.key("messaging", "typing")


def _throttle_key(conversation_id: int, member_id: int) -> str:
    return stores.key("messaging", "typing", conversation_id, member_id, "announced")


def _member(conversation_id: int, member_id: int) -> str:
    return f"{int(conversation_id)}:{int(member_id)}"


def _parse(item: Any) -> tuple[int, int]:
    text = item.decode() if isinstance(item, bytes) else str(item)
    conversation, _, member = text.partition(":")
    return int(conversation), int(member)


class RedisStore:
    """Shared by every worker. Starts and stops come from request threads (the sync client); sweeps from each
    worker's event loop (that loop's async client)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._start = stores.client(server).register_script(_START_LUA)

    def start(
        self, conversation_id: int, member_id: int, *, now: float, throttle_secs: float, timeout_secs: float
    ) -> Started:
        keys = [_marks_key(), _throttle_key(conversation_id, member_id)]
        args: list[str | int] = [
            _member(conversation_id, member_id),
            repr(now),
            repr(throttle_secs),
            repr(timeout_secs),
            max(1000, round(throttle_secs * 2000)),
        ]
        announced, shown, retry_in = self._start(keys=keys, args=args)
        return Started(bool(announced), bool(shown), float(retry_in))

    def stop(self, conversation_id: int, member_id: int) -> bool:
        return bool(stores.client(self.server).zrem(_marks_key(), _member(conversation_id, member_id)))

    async def atake_expired(self, now: float, limit: int) -> list[tuple[int, int]]:
        script = stores.aclient(self.server).register_script(_TAKE_EXPIRED_LUA)
        items = await script(keys=[_marks_key()], args=[repr(now), int(limit)])
        return [_parse(item) for item in items]


_slot: stores.Slot[Store] = stores.Slot(memory=MemoryStore, redis=RedisStore)


def get_store() -> Store:
    """This process's store: Redis when REDIS_URL is set, else memory."""
    return _slot.get()


def reset_store() -> None:
    """Forget the store (settings changed, tests)."""
    _slot.reset()
