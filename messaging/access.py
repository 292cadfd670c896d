"""Who may read a conversation's topics: its participants, at most ONE database query per check. Async.

The core calls `participants_only` (the `aread` rule of the `conversation.{id}.*` namespace, declared in
MessagingConfig.ready) with every conversation topic of one connect or subscription request at once, after
the sync rule (signed-in members only) let them through.

Each worker keeps the (member, conversation) pairs it found a participant in an LRU of MESSAGING
ACCESS_CACHE_SIZE entries, each good for ACCESS_CACHE_SECS, so a stream taking a conversation's messages, typing
and receipts topics, or coming back after a reconnect, costs no further query. Why a removal is never served
from it, on any worker:
- every entry carries the conversation's access version as read BEFORE its query, and is used only while that
  version is still current; the version lives in Redis (in this process on the embedded default), one MGET per
  check for all its conversations;
- services.remove_participant sets a new version inside its transaction (so a Redis failure refuses the removal:
  fail closed) and again after commit, BEFORE it asks the workers to take the topics from her streams. A check
  after that revocation reaches a worker reads the new version, misses, and the database says no. An entry filled
  while the removal's transaction was open carries the first new version and is dropped by the second.
Only participants are cached: a member just added is asked of the database, so she may subscribe at once.
If Redis cannot be read, the check asks the database (logged and counted), never the cache.
"""

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

from channels.db import database_sync_to_async
from redis.exceptions import RedisError

from messaging import conf, queries
from realtime import stores

logger = logging.getLogger(__name__)

# The ids a BigAutoField can hold; a longer number names no conversation (and would overflow the query).
_MAX_ID_DIGITS = 18
# A conversation nobody was ever removed from (or whose version key expired) is at this version.
INITIAL_VERSION = "0"
# How long a version key outlives its last change: far longer than any cache entry (ACCESS_CACHE_SECS is at most
# an hour, messaging.E007), so a key that expires back to INITIAL_VERSION can match no live entry.
VERSION_KEEP_SECS = 7 * 24 * 3600

stats: dict[str, int] = {"hits": 0, "misses": 0, "queries": 0, "evictions": 0, "version_errors": 0}

_aparticipating = database_sync_to_async(queries.participating)


class AccessUnavailable(Exception):
    """A conversation's access version could not be changed (Redis): a removal is refused rather than risk a
    worker serving it from its cache."""


# -- the cache: pure, time passed in ----------------------------------------------------------------


class AccessCache:
    """(member, conversation) pairs found participating, with the version they were found at; LRU-bounded."""

    def __init__(self, size: int, ttl_secs: float) -> None:
        self.size = size
        self.ttl_secs = ttl_secs
        self._entries: OrderedDict[tuple[int, int], tuple[str, float]] = OrderedDict()
        # Worker threads (database_sync_to_async) never touch it, but tests and management commands run loops
        # in several threads: a lock costs about 50 ns uncontended.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, member_id: int, conversation_id: int, version: str, now: float) -> bool:
        """Whether `member_id` was found in `conversation_id` at `version`, less than ttl_secs before `now`."""
        key = (member_id, conversation_id)
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return False
            if found[0] != version or found[1] <= now:
                del self._entries[key]  # stale for good: a version never comes back within VERSION_KEEP_SECS
                return False
            self._entries.move_to_end(key)
            return True

    def put(self, member_id: int, conversation_id: int, version: str, now: float) -> int:
        """Remember a participation found at `version`; returns how many entries were evicted to make room."""
        if self.size <= 0:
            return 0
        with self._lock:
            self._entries[(member_id, conversation_id)] = (version, now + self.ttl_secs)
            self._entries.move_to_end((member_id, conversation_id))
            evicted = 0
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
                evicted += 1
            return evicted

    def forget_conversations(self, conversation_ids: Iterable[int]) -> None:
        """Drop every entry of these conversations (O(entries): removals are rare next to checks)."""
        gone = set(conversation_ids)
        with self._lock:
            for key in [key for key in self._entries if key[1] in gone]:
                del self._entries[key]


# -- access versions: one per conversation, changed by every removal --------------------------------


class Versions(Protocol):
    async def aget(self, conversation_ids: list[int]) -> dict[int, str]:
        """The current version of each conversation (INITIAL_VERSION if it never changed)."""

    def change(self, conversation_ids: list[int]) -> None:
        """Give each conversation a new version (raises RedisError/OSError when it cannot)."""


class MemoryVersions:
    """This process only (the embedded default: one process serves the streams and the API)."""

    def __init__(self) -> None:
        self._versions: dict[int, str] = {}

    async def aget(self, conversation_ids: list[int]) -> dict[int, str]:
        return {cid: self._versions.get(cid, INITIAL_VERSION) for cid in conversation_ids}

    def change(self, conversation_ids: list[int]) -> None:
        for cid in conversation_ids:
            self._versions[cid] = secrets.token_hex(8)


class RedisVersions:
    """Shared by every worker: one key per conversation ever changed, on the home shard (one MGET per check)."""

    def __init__(self, server: str) -> None:
        self.server = server

    @staticmethod
    def key(conversation_id: int) -> str:
        return stores.key("messaging", "access", conversation_id)

    async def aget(self, conversation_ids: list[int]) -> dict[int, str]:
        values = await stores.aclient(self.server).mget([self.key(cid) for cid in conversation_ids])
        return {
            cid: INITIAL_VERSION if value is None else value.decode() if isinstance(value, bytes) else str(value)
            for cid, value in zip(conversation_ids, values, strict=True)
        }

    def change(self, conversation_ids: list[int]) -> None:
        # A random token, not INCR: a Redis that restarted empty could count back up to a version still cached.
        pipe = stores.client(self.server).pipeline(transaction=False)
        for cid in conversation_ids:
            pipe.set(self.key(cid), secrets.token_hex(8), ex=VERSION_KEEP_SECS)
        pipe.execute()


_versions: stores.Slot[Versions] = stores.Slot(memory=MemoryVersions, redis=RedisVersions)
_cache: AccessCache | None = None
_cache_lock = threading.Lock()


def get_cache() -> AccessCache:
    """This process's cache, sized from the settings on first use."""
    global _cache
    if _cache is None:
        with _cache_lock:
            if _cache is None:
                _cache = AccessCache(int(conf.get("ACCESS_CACHE_SIZE")), float(conf.get("ACCESS_CACHE_SECS")))
    return _cache


def reset() -> None:
    """Forget the cache and the versions store (settings changed, tests)."""
    global _cache
    _cache = None
    _versions.reset()


def change_versions(conversation_ids: list[int]) -> None:
    """Sync: invalidate every worker's cached participations in these conversations. Raises AccessUnavailable
    when the shared version cannot be changed (the caller must not go on with a removal then)."""
    if not conversation_ids:
        return
    try:
        _versions.get().change(conversation_ids)
    except (RedisError, OSError) as exc:
        stats["version_errors"] += 1
        raise AccessUnavailable(f"the access versions of conversations {conversation_ids[:5]} (Redis): {exc}") from exc
    # This process's entries go at once too: nothing to read back for them.
    if _cache is not None:
        _cache.forget_conversations(conversation_ids)


# -- the read rule ----------------------------------------------------------------------------------


async def aparticipating(member_id: int, conversation_ids: list[int], *, now: float | None = None) -> set[int]:
    """Async: which of these conversations `member_id` takes part in; at most one database query, none when the
    cache knows them all (one Redis MGET of their versions with REDIS_URL set)."""
    cache = get_cache()
    if cache.size <= 0:
        stats["queries"] += 1
        return await _aparticipating(member_id, conversation_ids)
    try:
        versions = await _versions.get().aget(conversation_ids)
    except (RedisError, OSError) as exc:
        stats["version_errors"] += 1
        logger.warning("access versions unreadable (%s): conversations %s asked of the database", exc, conversation_ids)
        stats["queries"] += 1
        return await _aparticipating(member_id, conversation_ids)
    now = time.monotonic() if now is None else now
    known = {cid for cid in conversation_ids if cache.get(member_id, cid, versions[cid], now)}
    stats["hits"] += len(known)
    missing = [cid for cid in conversation_ids if cid not in known]
    if not missing:
        return known
    stats["misses"] += len(missing)
    stats["queries"] += 1
    found = await _aparticipating(member_id, missing)
    for cid in found:
        # The version read before the query: a removal that committed after it changed the version since.
        stats["evictions"] += cache.put(member_id, cid, versions[cid], now)
    return known | found


async def participants_only(member_id: int | None, params: list[Mapping[str, str]]) -> list[bool]:
    """Async: for each topic's params (`id`: the conversation), whether `member_id` takes part in it."""
    ids = [
        int(p["id"]) if len(p.get("id", "")) <= _MAX_ID_DIGITS and p.get("id", "").isdigit() else None for p in params
    ]
    wanted = sorted({conversation_id for conversation_id in ids if conversation_id is not None})
    if member_id is None or not wanted:
        return [False] * len(params)
    found = await aparticipating(member_id, wanted)
    return [conversation_id in found for conversation_id in ids]


def figures() -> dict[str, float]:
    """For the worker snapshot (`messaging_access_*`): counters since start and the cache's size."""
    cache = _cache
    return {**stats, "entries": len(cache) if cache is not None else 0}
