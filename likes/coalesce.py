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

Batched: every window of a process that is due while a flush is running waits for it and is flushed with the
others in the next round (one Redis round trip to release them all, one query for their totals, one round trip
to raise their marks, one publish): with 100 videos liked at once, flushing each window on its own cost more
than storing the likes did (docs/benchmarks.md). Step 1's attempts can ride along (`likes_committed_soon`: the
round's release trip also asks for the windows of videos liked since), so the likes writer never waits for
Redis. A process that already holds a video's window (its flush has not begun to release it) does not ask
Redis again for it: that flush releases later and reads a total that includes the like, exactly as if the
like had failed to take the lock.

Failure model: the lock's TTL (LOCK_TTL_WINDOWS windows, at least MIN_LOCK_TTL_SECS) only matters when a
process dies (SIGKILL, or SIGTERM: Daphne drops pending callbacks) while holding it; the likes of that
window are then announced by the next like's event after the TTL. If the store (Redis) is unreachable,
likes are still stored and counted, but no event announces them until it is back. Not guaranteed: the ORDER
in which two workers' events for one video reach viewers. Each event's count is exact and marks only rise,
but a flush that stalls for more than a window between raising the mark and publishing can be overtaken by
the next window's flush on the other worker (seen under CPU starvation, when flushes ran seconds late).
"""

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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

    def acquire_many(self, keys: Sequence[str], token: str, ttl_secs: float) -> list[bool]:
        """`acquire` for each key (one round trip), with one token; whether each was set by this call."""

    def release_many(self, windows: Sequence[tuple[str, str]]) -> None:
        """`release` for each (key, token) (one round trip)."""

    def advance_many(self, totals: Sequence[tuple[str, int]]) -> list[int | None]:
        """`advance` for each (key, total) (one round trip); the marks before, in order."""

    def release_and_acquire(
        self, windows: Sequence[tuple[str, str]], keys: Sequence[str], token: str, ttl_secs: float
    ) -> list[bool]:
        """`release_many(windows)` then `acquire_many(keys, ...)`, in one round trip."""


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

    # One call per key: tests replace `acquire` (a store that fails) and the batch must fail with it.
    def acquire_many(self, keys: Sequence[str], token: str, ttl_secs: float) -> list[bool]:
        return [self.acquire(key, token, ttl_secs) for key in keys]

    def release_many(self, windows: Sequence[tuple[str, str]]) -> None:
        for key, token in windows:
            self.release(key, token)

    def advance_many(self, totals: Sequence[tuple[str, int]]) -> list[int | None]:
        return [self.advance(key, total) for key, total in totals]

    def release_and_acquire(
        self, windows: Sequence[tuple[str, str]], keys: Sequence[str], token: str, ttl_secs: float
    ) -> list[bool]:
        self.release_many(windows)
        return self.acquire_many(keys, token, ttl_secs)


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

    # Pipelines without MULTI: each command is atomic on its own, which is all the protocol asks of them.
    def acquire_many(self, keys: Sequence[str], token: str, ttl_secs: float) -> list[bool]:
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, token, nx=True, px=max(1, round(ttl_secs * 1000)))
        return [bool(answer) for answer in pipe.execute()]

    def release_many(self, windows: Sequence[tuple[str, str]]) -> None:
        if not windows:
            return
        pipe = self.client.pipeline(transaction=False)
        for key, token in windows:
            self._release(keys=[key], args=[token], client=pipe)
        pipe.execute()

    def advance_many(self, totals: Sequence[tuple[str, int]]) -> list[int | None]:
        if not totals:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key, total in totals:
            self._advance(keys=[key], args=[int(total), MARK_TTL_SECS], client=pipe)
        return [None if int(previous) < 0 else int(previous) for previous in pipe.execute()]

    def release_and_acquire(
        self, windows: Sequence[tuple[str, str]], keys: Sequence[str], token: str, ttl_secs: float
    ) -> list[bool]:
        if not windows and not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key, old_token in windows:
            self._release(keys=[key], args=[old_token], client=pipe)
        for key in keys:
            pipe.set(key, token, nx=True, px=max(1, round(ttl_secs * 1000)))
        return [bool(answer) for answer in pipe.execute()[len(windows) :]]


Window = tuple[int, str]
"""(video id, token): a window this process opened, to be flushed with the token that opened it."""


class Coalescer:
    """Turns committed likes into at most one announcement per video per window.

    `read_total(video_id)` returns the committed like total (None: no such video) and `emit(video_id, total,
    covered)` announces it; `read_totals(video_ids)` ({id: total}, unknown ids left out) and `emit_many([(video_id,
    total, covered)])` do the same for a batch of windows, and are used when given. They run on the thread that
    runs the flush. Thread-safe: like_committed is called from many threads at once.

    `schedule(delay, fn)` calls the window's due callback (cheap and non-blocking: it queues the window) once the
    window has passed; `run_flush(fn)` runs a flush of every queued window off the caller's thread (default: at
    once, in the caller's thread). One flush runs at a time per coalescer; windows due meanwhile go in the next.
    """

    def __init__(
        self,
        store: Store,
        *,
        window_secs: float,
        read_total: Callable[[int], int | None],
        emit: Callable[[int, int, int], None],
        schedule: Scheduler,
        read_totals: Callable[[Sequence[int]], dict[int, int]] | None = None,
        emit_many: Callable[[list[tuple[int, int, int]]], None] | None = None,
        run_flush: Callable[[Callable[[], None]], None] | None = None,
        on_unannounced: Callable[[list[int], Exception], None] | None = None,
    ) -> None:
        self.store = store
        self.window_secs = window_secs
        self.lock_ttl_secs = max(LOCK_TTL_WINDOWS * window_secs, MIN_LOCK_TTL_SECS)
        self.read_total = read_total
        self.emit = emit
        self.schedule = schedule
        self.read_totals = read_totals
        self.emit_many = emit_many
        self.run_flush = run_flush
        self.on_unannounced = on_unannounced
        self.stats = {"windows_opened": 0, "windows_skipped_held": 0, "flushes": 0, "flushed_windows": 0}
        self._mutex = threading.Lock()
        self._held: set[int] = set()  # videos whose window this process opened and has not begun to release
        self._due: list[Window] = []
        self._committed: set[int] = set()  # videos with likes committed, their windows to be asked for
        self._flushing = False

    def like_committed(self, video_id: int) -> bool:
        """Call after a like of `video_id` committed; True if this call opened the window (and will flush)."""
        return bool(self.likes_committed([video_id]))

    def likes_committed(self, video_ids: Iterable[int]) -> list[int]:
        """Call after likes of `video_ids` committed (one round trip for all); the videos whose window it opened."""
        with self._mutex:
            wanted = sorted({int(video_id) for video_id in video_ids})
            asked = [video_id for video_id in wanted if video_id not in self._held]
            self.stats["windows_skipped_held"] += len(wanted) - len(asked)
        if not asked:
            return []
        token = secrets.token_hex(8)
        taken = self.store.acquire_many([lock_key(video_id) for video_id in asked], token, self.lock_ttl_secs)
        opened = [video_id for video_id, won in zip(asked, taken, strict=True) if won]
        self._opened(opened, token)
        return opened

    def likes_committed_soon(self, video_ids: Iterable[int]) -> None:
        """Non-blocking `likes_committed`: the flusher asks for these windows in its next round, in the same round
        trip as the releases it makes anyway (the likes writer then never waits for Redis). A store error hands the
        videos to `on_unannounced`."""
        with self._mutex:
            # A window this process holds covers them already (as in likes_committed): nothing to ask for.
            wanted = {int(video_id) for video_id in video_ids}
            fresh = wanted - self._held
            self.stats["windows_skipped_held"] += len(wanted) - len(fresh)
            if not fresh:
                return
            self._committed.update(fresh)
            if self._flushing:
                return
            self._flushing = True
        self._start_flush()

    def holds(self) -> int:
        """How many windows this process has open (their flushes are still to come)."""
        return len(self._held)

    def window_due(self, video_id: int, token: str) -> None:
        """The window `token` opened for `video_id` has passed: flush it, with every other window due meanwhile."""
        with self._mutex:
            self._due.append((video_id, token))
            if self._flushing:
                return
            self._flushing = True
        self._start_flush()

    def _start_flush(self) -> None:
        try:
            (self.run_flush or _call)(self.flush_due)
        except BaseException:
            with self._mutex:
                self._flushing = False
            raise

    def flush_due(self) -> None:
        """Flush every queued window and ask for every queued one, round after round, until none is left (one
        caller at a time)."""
        try:
            while True:
                with self._mutex:
                    windows, self._due = self._due, []
                    committed, self._committed = self._committed, set()
                    if not windows and not committed:
                        self._flushing = False
                        return
                try:
                    self._round(windows, committed)
                except Exception:
                    # Flushed windows' locks expire (lock_ttl_secs) and the next like of each video announces its
                    # total; windows not opened went to on_unannounced.
                    logger.exception("a round of %d like windows (%d asked for) failed", len(windows), len(committed))
        except BaseException:
            with self._mutex:
                self._flushing = False
            raise

    def flush(self, video_id: int, token: str) -> None:
        """End the window `token` opened: release first, then read and announce (see the module doc)."""
        self.flush_many([(video_id, token)])

    def flush_many(self, windows: Sequence[Window]) -> None:
        """End these windows: release them all first, then read their totals and announce each rise."""
        self._round(windows, set())

    def _round(self, windows: Sequence[Window], committed: set[int]) -> None:
        due = {video_id for video_id, _token in windows}
        with self._mutex:
            self._held.difference_update(due)
            # A video flushed in this round needs no window: its likes committed before the read below.
            asked = sorted(video_id for video_id in committed if video_id not in self._held and video_id not in due)
            self.stats["windows_skipped_held"] += len(committed) - len(asked)
            if windows:
                self.stats["flushes"] += 1
                self.stats["flushed_windows"] += len(windows)
        token = secrets.token_hex(8)
        releases = [(lock_key(video_id), old_token) for video_id, old_token in windows]
        try:
            taken = self.store.release_and_acquire(
                releases, [lock_key(video_id) for video_id in asked], token, self.lock_ttl_secs
            )
        except Exception as exc:
            if asked and self.on_unannounced is not None:
                self.on_unannounced(asked, exc)
            raise
        self._opened([video_id for video_id, won in zip(asked, taken, strict=True) if won], token)
        if windows:
            self._announce(sorted(due))

    def _opened(self, videos: list[int], token: str) -> None:
        with self._mutex:
            self._held.update(videos)
            self.stats["windows_opened"] += len(videos)
        for video_id in videos:
            self.schedule(self.window_secs, partial(self.window_due, video_id, token))

    def _announce(self, videos: list[int]) -> None:
        if self.read_totals is not None:
            totals = self.read_totals(videos)
        else:
            totals = {video_id: total for video_id in videos if (total := self.read_total(video_id)) is not None}
        found = [(video_id, totals[video_id]) for video_id in videos if video_id in totals]
        previous = self.store.advance_many([(mark_key(video_id), total) for video_id, total in found])
        rises = [
            (video_id, total, total - (before or 0))
            for (video_id, total), before in zip(found, previous, strict=True)
            if total - (before or 0) > 0
        ]
        if self.emit_many is not None:
            if rises:
                self.emit_many(rises)
        else:
            for rise in rises:
                self.emit(*rise)


def _call(fn: Callable[[], None]) -> None:
    fn()
