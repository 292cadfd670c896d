"""Presence actions: record heartbeats, sweep silent members offline, read statuses; the only emitter of its events.

Async, called by the real-time worker: `arecord_heartbeats` is a member-heartbeat hook and `asweep_forever` a
background task (realtime.hooks, registered in PresenceConfig.ready). The store decides every transition
atomically, so each `presence.changed` event is published by exactly one worker. The Presence table (admin) is
written off the hot path, on transitions only, through the named ORM boundaries below.
"""

import asyncio
import logging
import random
import time
from collections.abc import Mapping

from channels.db import database_sync_to_async

from presence import conf, table
from presence.coalesce import Coalescer
from presence.models import Presence
from presence.status import OFFLINE, MemberStatus, next_changed_at
from presence.store import MemoryStore, RedisStore, new_store
from realtime.dispatcher import DispatchUnavailable
from realtime.publishing import apublish
from realtime.topics import presence_member

logger = logging.getLogger(__name__)

EVENT_TYPE = "presence.changed"
_ERROR_BACKOFF_SECS = 1.0
# Events handed to the channel layer at once (each its own topic, so they go out side by side). Measured here:
# 0.27 ms per event one at a time, 0.16-0.18 ms at 10-32 at once, 0.21-0.23 ms at 100 (client CPU bound).
PUBLISH_CONCURRENCY = 32

# The ORM boundary of the async side: each table access is one named sync function run in Django's thread.
_arecord_table = database_sync_to_async(table.record)
_aonline_in_table = database_sync_to_async(table.online_member_ids)
_alookup_table = database_sync_to_async(table.lookup)

stats = {
    "heartbeat_calls": 0,
    "heartbeats": 0,
    "went_online": 0,
    "went_offline": 0,
    "sweeps": 0,
    "publish_failed": 0,
    "table_writes": 0,
    "table_writes_dropped": 0,
    "table_writes_failed": 0,
    "reconciliations": 0,
}
"""Counters of this process, for operators, tests and the benchmark."""

_store: MemoryStore | RedisStore | None = None
_table_writes: set[asyncio.Task[None]] = set()


def get_store() -> MemoryStore | RedisStore:
    """This process's store, made from the settings on first use."""
    global _store
    if _store is None:
        _store = new_store(beat_batch=conf.get("HEARTBEAT_BATCH"), sweep_batch=conf.get("SWEEP_BATCH"))
    return _store


def reset_store() -> None:
    """Forget the store, so the next use builds it from the current settings (settings changed, tests)."""
    global _store
    _store = None


async def arecord_heartbeats(member_ids: list[int]) -> None:
    """Async: a heartbeat now for each member (they hold a stream on this worker).

    Publishes `presence.changed` (online) for each member who was offline. Concurrent calls (a burst of streams
    opening) are coalesced: one store call at a time per worker, whatever the number of members and callers.
    """
    if member_ids:
        await _coalesced_beats(member_ids)


async def _abeat_now(member_ids: list[int]) -> None:
    stats["heartbeat_calls"] += 1
    stats["heartbeats"] += len(member_ids)
    newly_online = await get_store().abeat(member_ids, time.time())
    stats["went_online"] += len(newly_online)
    await _aannounce(newly_online)


_coalesced_beats = Coalescer(_abeat_now)


async def asweep(now: float | None = None) -> list[MemberStatus]:
    """Async: take offline every member without a heartbeat for more than OFFLINE_AFTER_SECS.

    Publishes `presence.changed` (offline) for each, and returns them. Safe to run on every worker at once: the
    store hands each transition to exactly one caller.
    """
    stats["sweeps"] += 1
    newly_offline = await get_store().asweep(time.time() if now is None else now, conf.get("OFFLINE_AFTER_SECS"))
    stats["went_offline"] += len(newly_offline)
    await _aannounce(newly_offline)
    return newly_offline


async def asweep_forever() -> None:
    """Async, a worker's BACKGROUND_TASK for its lifetime: sweep every SWEEP_SECS, reconcile every RECONCILE_SECS.

    Every worker runs it, so offline events still come when the worker that saw a member's last heartbeat died.
    """
    loop = asyncio.get_running_loop()
    reconciling: asyncio.Task[None] | None = None
    sweep_secs = conf.sweep_secs()
    # Soon after start: a restart is exactly when the table may hold transitions the store no longer has.
    next_reconcile = loop.time() + sweep_secs
    while True:
        # Jitter spreads the workers' sweeps over the interval instead of stacking them on Redis.
        await asyncio.sleep(sweep_secs * random.uniform(0.75, 1.25))
        try:
            await asweep()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("presence sweep failed; retrying in %.1fs", _ERROR_BACKOFF_SECS)
            await asyncio.sleep(_ERROR_BACKOFF_SECS)
            continue
        if loop.time() >= next_reconcile and (reconciling is None or reconciling.done()):
            next_reconcile = loop.time() + conf.get("RECONCILE_SECS")
            # A task of its own: a slow database must not delay offline detection.
            # It writes the table too: aflush_table_writes waits for it like for any other copy.
            reconciling = _track_table_write(loop.create_task(_areconcile_logged(), name="presence-reconcile"))


async def _areconcile_logged() -> None:
    try:
        await areconcile()
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("presence reconciliation failed; the next one retries")


async def areconcile(now: float | None = None, *, claim: bool = True) -> int:
    """Async: repair the Presence table from the store; returns how many rows were offered to it.

    With `claim`, only one worker of the cluster runs it per RECONCILE_SECS. Online members get their current
    last-seen; members the table still shows online but the store does not are copied as they are in the store,
    or, if the store has no record of them (it lost its data: a restart of the embedded default, a Redis
    flush), marked offline as of `now`. Publishes nothing: only the store's transitions are announced.
    """
    store = get_store()
    if claim and not await store.aclaim("reconcile", 0.9 * conf.get("RECONCILE_SECS")):
        return 0
    now = time.time() if now is None else now
    stats["reconciliations"] += 1
    rows = await store.aonline()
    online_now = {row.member for row in rows}
    stale = [member for member in await _aonline_in_table() if member not in online_now]
    if stale:
        in_store = await store.astatuses(stale)
        rows.extend(row for row in in_store if row.changed_at is not None)
        lost = [row.member for row in in_store if row.changed_at is None]
        if lost:
            kept = await _alookup_table(lost)
            rows.extend(
                MemberStatus(member, OFFLINE, kept[member].last_seen, next_changed_at(kept[member].changed_at, now))
                for member in lost
                if member in kept
            )
    return await _arecord_table(rows)


async def astatuses(member_ids: list[int]) -> list[MemberStatus]:
    """Async: each member's status, last_seen and changed_at, in the order asked."""
    rows = await get_store().astatuses(member_ids)
    unknown = [row.member for row in rows if row.changed_at is None]
    return _with_table(rows, await _alookup_table(unknown) if unknown else {})


def may_read(member_id: int | None, params: Mapping[str, str]) -> bool:
    """Who may see members' presence (the topics' read rule and the API's permission): signed-in members, or
    anyone when PRESENCE PUBLIC is on. Read at each call, so the setting applies without a restart."""
    return member_id is not None or bool(conf.get("PUBLIC"))


def statuses(member_ids: list[int]) -> list[MemberStatus]:
    """Sync twin of astatuses, for views."""
    rows = get_store().statuses(member_ids)
    unknown = [row.member for row in rows if row.changed_at is None]
    return _with_table(rows, table.lookup(unknown) if unknown else {})


def _with_table(rows: list[MemberStatus], kept: dict[int, Presence]) -> list[MemberStatus]:
    # A member the store has no record of is offline; the table may still know when they were last seen (the
    # store lost its data, e.g. the embedded default restarted). Whether the table thought them online is stale.
    return [
        MemberStatus(row.member, OFFLINE, kept[row.member].last_seen, kept[row.member].changed_at)
        if row.member in kept
        else row
        for row in rows
    ]


async def _aannounce(changes: list[MemberStatus]) -> None:
    """Publish each transition on its member's topic, then copy them to the table in the background."""
    if not changes:
        return
    try:
        await _apublish_all(changes)
    finally:
        _spawn_table_write(changes)


async def _apublish_all(changes: list[MemberStatus]) -> None:
    # Concurrently, a bounded number at a time: each event has its own topic, so one after the other would wait
    # a channel-layer round trip each, while an unbounded burst (the thousands a dead worker leaves) would
    # exhaust the layer's Redis connection pool (redis-py raises past it).
    for start in range(0, len(changes), PUBLISH_CONCURRENCY):
        chunk = changes[start : start + PUBLISH_CONCURRENCY]
        results = await asyncio.gather(
            *(apublish(presence_member(row.member), EVENT_TYPE, row.as_data()) for row in chunk),
            return_exceptions=True,
        )
        failures = [result for result in results if isinstance(result, Exception)]
        if not failures:
            continue
        # The store has moved on, so nobody publishes these again: watchers see the state on their next load
        # (a page refetches after its stream reconnects).
        stats["publish_failed"] += len(failures)
        unexpected = next((exc for exc in failures if not isinstance(exc, DispatchUnavailable)), None)
        if unexpected is None:
            logger.warning("presence: %d presence.changed events lost: the channel layer is unreachable", len(failures))
        else:
            logger.error("presence: %d presence.changed events lost", len(failures), exc_info=unexpected)


def _spawn_table_write(rows: list[MemberStatus]) -> None:
    if len(_table_writes) >= conf.get("MAX_PENDING_TABLE_WRITES"):
        # Dropped, not queued: the next reconciliation copies the store's state anyway.
        stats["table_writes_dropped"] += 1
        return
    _track_table_write(asyncio.get_running_loop().create_task(_awrite_table(rows), name="presence-table-write"))


def _track_table_write(task: asyncio.Task[None]) -> asyncio.Task[None]:
    _table_writes.add(task)
    task.add_done_callback(_table_writes.discard)
    return task


async def _awrite_table(rows: list[MemberStatus]) -> None:
    try:
        await _arecord_table(rows)
        stats["table_writes"] += 1
    except asyncio.CancelledError:
        raise
    except Exception:
        stats["table_writes_failed"] += 1
        logger.exception("presence: copying %d transitions to the Presence table failed", len(rows))


async def aflush_table_writes() -> None:
    """Async: wait for the table writes in flight (tests, benchmarks)."""
    while _table_writes:
        await asyncio.gather(*_table_writes, return_exceptions=True)
