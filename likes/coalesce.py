"""Like coalescing: at most one like event per video per window, across every worker process, exact totals.

The protocol, per video:
1. A like commits, THEN its on_commit callback tries to take the video's window lock (SET NX, with a
   token and a TTL). The taker schedules a flush at the end of the window; everyone else does nothing.
2. The flush first releases the lock (only if it still holds its token), THEN reads the exact total from
   the database, raises the video's published mark to it atomically (never lowering it) and publishes
   `covered = total - previous mark` if that is positive.

Why nothing is lost: a like whose attempt failed saw the lock held by a taker whose flush had not yet
released it, so that flush releases it later and reads a total that includes the like (which committed
before its attempt). A like after the release takes the lock itself. Why counts never go back: the mark
only rises, so a flush that read an older total than one already published announces nothing. So the
`covered` of all events add up exactly to the likes made, and each event carries the exact total.

Failure model: the lock's TTL (LOCK_TTL_WINDOWS windows, at least MIN_LOCK_TTL_SECS) only matters when a
process dies (SIGKILL, or SIGTERM: Daphne drops pending callbacks) while holding it; the likes of that
window are then announced by the next like's event after the TTL. If the store (Redis) is unreachable,
likes are still stored and counted, but no event announces them until it is back.
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from realtime import stores

logger = logging.getLogger(__name__)

LOCK_TTL_WINDOWS = 4
MIN_LOCK_TTL_SECS = 1.0
# The published mark outlives any live video's quiet spell; if it ever expires, the next event's `covered`
# counts every like of the video again (its `count` stays exact).
MARK_TTL_SECS = 7 * 86_400

Scheduler = Callable[[float, Callable[[], None]], None]
"""schedule(delay_secs, fn): call the sync `fn` once, `delay_secs` from now, off the caller's thread."""


def lock_key(video_id: int) -> str:
    return stores.key("likes", int(video_id), "window")


def mark_key(video_id: int) -> str:
    return stores.key("likes", int(video_id), "published")


class Store(Protocol):
    """Where the window locks and published marks live; every method is atomic and thread-safe."""

    def acquire(self, key: str, token: str, ttl_secs: float) -> bool:
        """Set `key` to `token` for `ttl_secs` unless it is set; whether this call set it."""

    def release(self, key: str, token: str) -> None:
        """Delete `key` if it still holds `token` (a late flush must not free a later taker's window)."""

    def advance(self, key: str, total: int) -> int | None:
        """Raise the mark at `key` to `total` if that is higher; return the mark before (None: none yet)."""


class MemoryStore:
    """One process (the embedded default). `clock` returns monotonic seconds; tests pass a fake one."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._locks: dict[str, tuple[str, float]] = {}  # key -> (token, deadline)
        self._marks: dict[str, int] = {}
        self._mutex = threading.Lock()

    def acquire(self, key: str, token: str, ttl_secs: float) -> bool:
        now = self.clock()
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[1] > now:
                return False
            self._locks[key] = (token, now + ttl_secs)
            return True

    def release(self, key: str, token: str) -> None:
        with self._mutex:
            held = self._locks.get(key)
            if held is not None and held[0] == token:
                del self._locks[key]

    def advance(self, key: str, total: int) -> int | None:
        with self._mutex:
            previous = self._marks.get(key)
            if previous is None or total > previous:
                self._marks[key] = total
            return previous


_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_ADVANCE_LUA = """
local previous = redis.call('GET', KEYS[1])
local total = tonumber(ARGV[1])
if (not previous) or tonumber(previous) < total then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
if previous then
  return tonumber(previous)
end
return -1
"""


class RedisStore:
    """Shared by every worker through Redis; `client` is a sync redis-py client (thread-safe pool)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._release = client.register_script(_RELEASE_LUA)
        self._advance = client.register_script(_ADVANCE_LUA)

    @classmethod
    def from_settings(cls) -> "RedisStore":
        # The process's sync client has bounded waits: a like's callback runs on its request thread and must
        # not hang on a dead Redis.
        return cls(stores.client())

    def acquire(self, key: str, token: str, ttl_secs: float) -> bool:
        return bool(self.client.set(key, token, nx=True, px=max(1, round(ttl_secs * 1000))))

    def release(self, key: str, token: str) -> None:
        self._release(keys=[key], args=[token])

    def advance(self, key: str, total: int) -> int | None:
        previous = int(self._advance(keys=[key], args=[int(total), MARK_TTL_SECS]))
        return None if previous < 0 else previous


class Coalescer:
    """Turns committed likes into at most one `emit(video_id, total, covered)` per video per window.

    `read_total(video_id)` returns the committed like total (None: no such video); both it and `emit` run
    on the scheduler's thread. Thread-safe: like_committed is called from many request threads at once.
    """

    def __init__(
        self,
        store: Store,
        *,
        window_secs: float,
        read_total: Callable[[int], int | None],
        emit: Callable[[int, int, int], None],
        schedule: Scheduler,
    ) -> None:
        self.store = store
        self.window_secs = window_secs
        self.lock_ttl_secs = max(LOCK_TTL_WINDOWS * window_secs, MIN_LOCK_TTL_SECS)
        self.read_total = read_total
        self.emit = emit
        self.schedule = schedule

    def like_committed(self, video_id: int) -> bool:
        """Call after a like of `video_id` committed; True if this call opened the window (and will flush)."""
        token = secrets.token_hex(8)
        if not self.store.acquire(lock_key(video_id), token, self.lock_ttl_secs):
            return False
        self.schedule(self.window_secs, partial(self.flush, video_id, token))
        return True

    def flush(self, video_id: int, token: str) -> None:
        """End the window `token` opened: release first, then read and announce (see the module doc)."""
        self.store.release(lock_key(video_id), token)
        total = self.read_total(video_id)
        if total is None:
            return
        previous = self.store.advance(mark_key(video_id), total)
        covered = total - (previous or 0)
        if covered > 0:
            self.emit(video_id, total, covered)
