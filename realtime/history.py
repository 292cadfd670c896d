"""Per-topic history: every event's position (epoch + offset) and the recent events a client resumes from.

Each topic has a position counter: `offset` increases by one per event, and `epoch` names one life of that
topic's history (it changes when the history was lost or may have been: Redis flushed, restarted, failed
over to a replica, or the embedded process restarted). A client that remembers (epoch, offset) per topic
can ask for what it missed; if the history still holds every event after that offset in the same epoch, it
gets exactly those, else it is told plainly that it has a gap (and refetches that topic only).

Positions are assigned, and events appended, by the dispatch round itself (realtime.dispatcher: one script
per Redis shard that also reads the topics' hosting workers), so history costs no extra round trip per
event. This module holds what both the dispatcher and the workers share: the layout of a topic's history in
Redis (two keys on the shard of the topic's group), the script that reads it, the in-process history of the
embedded default, and the settings (size, age, topics left out).

In Redis, `<prefix>:history:<group>:m` is a hash {epoch, seq, server} (seq: the last offset given; server:
the run_id of the Redis server that gave it, so that a promoted replica starts a new epoch) kept for
META_SECS after the last event, so a client idle for longer than the history's age but with nothing missed
still resumes; `<prefix>:history:<group>` is a list of (published-at ms, frame) pairs, at most SIZE events
and none older than SECS once a newer event is appended (the whole list expires SECS after its last event).
"""

import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from realtime import conf
from realtime.events import Template, frame_at
from realtime.topics import group_name

NO_EPOCH = ""


class InvalidPosition(ValueError):
    """A position that is not `<epoch>:<offset>` (or `<topic>:<epoch>:<offset>` where a topic is named)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a client is in a topic: the last event it has, by epoch and offset (offset 0: none yet)."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"


_EPOCH_RE = re.compile(r"[0-9a-z]{1,32}")


def parse_position(value: object) -> Position:
    """`"<epoch>:<offset>"` or `{"epoch": ..., "offset": ...}` -> Position; raises InvalidPosition."""
    if isinstance(value, dict):
        epoch, offset = value.get("epoch"), value.get("offset")
    elif isinstance(value, str):
        epoch, _, offset = value.partition(":")
    else:
        raise InvalidPosition('a position is \'<epoch>:<offset>\' or {"epoch": ..., "offset": ...}')
    if isinstance(offset, str) and offset.isascii() and offset.isdigit() and len(offset) <= 18:
        offset = int(offset)
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < 10**18:
        raise InvalidPosition("an offset is a whole number from 0")
    # An empty epoch with offset 0: the topic had no event yet when the client joined it.
    if not isinstance(epoch, str) or not (_EPOCH_RE.fullmatch(epoch) or (epoch == NO_EPOCH and offset == 0)):
        raise InvalidPosition(f"epoch {str(epoch)[:40]!r} is not 1 to 32 lower-case letters and digits")
    return Position(epoch, offset)


def parse_event_id(value: str) -> tuple[str, Position]:
    """An SSE id as the stream writes it, `<topic>:<epoch>:<offset>` (Last-Event-ID) -> (topic, Position)."""
    topic, sep, position = value.rpartition(":")
    topic, sep2, epoch = topic.rpartition(":")
    if not sep or not sep2 or not topic:
        raise InvalidPosition("Last-Event-ID is not '<topic>:<epoch>:<offset>'")
    return topic, parse_position(f"{epoch}:{position}")


@dataclass(slots=True)
class Replay:
    """What the history holds for one topic after a position.

    `recovered`: every event after the position is in `frames` (possibly none); otherwise the client has a
    gap there, and, from Redis only, `frames` holds the topic's current epoch from its first event when the
    position was in another epoch and the history still has all of that one (Redis failed over: what followed
    is not lost too; a worker's sequencer delivers them after the gap, a resuming stream gets the gap and
    refetches). In process, another epoch means the process restarted, and its workers with it: no frames.
    `head` is the topic's position now (as far as this read saw it).
    """

    recovered: bool
    head: Position
    frames: list[bytes] = field(default_factory=list)

    @property
    def first_offset(self) -> int:
        return self.head.offset - len(self.frames) + 1


@dataclass(frozen=True, slots=True)
class Settings:
    size: int  # events per topic; 0: history off
    secs: float
    meta_secs: float
    exclude: re.Pattern[str] | None

    def keeps(self, topic: str) -> bool:
        """Whether `topic` has a history (and so positions)."""
        return self.size > 0 and self.secs > 0 and not (self.exclude and self.exclude.fullmatch(topic))


# Topics apps declare as ephemeral (typing indicators): no history, no positions, never replayed.
_ephemeral: list[str] = []


def declare_ephemeral(pattern: str) -> None:
    """An app's topics that must never be kept or replayed (a regular expression of whole topic names).

    Called from AppConfig.ready, before the first dispatcher reads the settings."""
    re.compile(pattern)
    if pattern not in _ephemeral:
        _ephemeral.append(pattern)


def settings() -> Settings:
    patterns = [pattern for pattern in [conf.get("HISTORY_EXCLUDE"), *_ephemeral] if pattern]
    exclude = "|".join(f"(?:{pattern})" for pattern in patterns)
    return Settings(
        size=int(conf.get("HISTORY_SIZE")),
        secs=float(conf.get("HISTORY_SECS")),
        meta_secs=float(conf.get("HISTORY_META_SECS")),
        exclude=re.compile(exclude) if exclude else None,
    )


def new_epoch() -> str:
    return secrets.token_hex(4)


# -- Redis -----------------------------------------------------------------------------------------------


def redis_keys(prefix: str, topic: str) -> tuple[str, str]:
    """(meta hash, event list) of `topic`; both hash like the topic's group, so they live on its shard."""
    base = f"{prefix}:history:{group_name(topic)}"
    return f"{base}:m", base


# Every script that reads or gives a topic's position first makes the serving Redis server its owner (Lua
# prepended to the dispatcher's round and registration scripts and to READ_LUA). A topic's epoch belongs to the
# server that gave its offsets (its run_id, in the meta hash): a replica promoted by Sentinel, or a server
# restarted from its files, may lack the last offsets the old one gave (replication and fsync are
# asynchronous). Giving them again in the same epoch would make workers that delivered the lost events drop the
# new ones as duplicates, and a resumed client skip them; so another server's positions are dropped with their
# events and the topic starts a new epoch at once, which every position in the old one then meets as a gap.
# Positions written before servers were recorded (an upgrade) are taken over as they are. Without a run_id in
# INFO (a Redis-like server), positions are never dropped. INFO in a script needs Redis >= 5 (effects
# replication), as channels-redis does.
OWN_LUA = """
local server = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or 'unknown'
local function own(meta, list, fresh_epoch, meta_ttl, create)
    local owner = redis.call('HGET', meta, 'server')
    if owner == server then
        return
    end
    if redis.call('HEXISTS', meta, 'epoch') == 0 then
        if create then
            redis.call('HSET', meta, 'epoch', fresh_epoch, 'seq', 0, 'server', server)
        end
    elseif not owner then
        redis.call('HSET', meta, 'server', server)
    else
        redis.call('DEL', list)
        redis.call('HSET', meta, 'epoch', fresh_epoch, 'seq', 0, 'server', server)
        redis.call('EXPIRE', meta, meta_ttl)
    end
end
"""

# KEYS: per topic, its meta hash and its list. ARGV: a new epoch and the meta TTL (s) for OWN_LUA, then per
# topic the epoch and offset the client has.
# Per topic: {1 or 0 (recovered), epoch now, seq now, ms, frame, ms, frame, ...} (frames after the position, or
# the current epoch's from its first when the position is in another).
READ_LUA = (
    OWN_LUA
    + """
local out = {}
for i = 1, #KEYS, 2 do
    own(KEYS[i], KEYS[i + 1], ARGV[1], ARGV[2], false)
    local epoch, seq = unpack(redis.call('HMGET', KEYS[i], 'epoch', 'seq'))
    seq = tonumber(seq or '0')
    local want, after = ARGV[i + 2], tonumber(ARGV[i + 3])
    if want == '' and epoch then
        -- "No event existed when I joined": every event of the epoch since is missed.
        want = epoch
    end
    local row
    local recovered = 1
    if epoch and epoch ~= want then
        -- Another epoch (Redis lost the history, or failed over): a gap, then that epoch from its start.
        recovered, after = 0, 0
    end
    if not epoch then
        row = {(want == '' and after == 0) and 1 or 0, '', 0}
    elseif after > seq then
        row = {0, epoch, seq}
    elseif after == seq then
        row = {recovered, epoch, seq}
    else
        local stored = redis.call('LLEN', KEYS[i + 1]) / 2
        local first = seq - stored + 1
        if after + 1 < first then
            row = {0, epoch, seq}
        else
            row = redis.call('LRANGE', KEYS[i + 1], 2 * (after + 1 - first), -1)
            table.insert(row, 1, seq)
            table.insert(row, 1, epoch)
            table.insert(row, 1, recovered)
        end
    end
    out[#out + 1] = row
end
return out
"""
)


def replay_from_row(row: list[Any]) -> Replay:
    """One topic's row of READ_LUA -> Replay (the stored publish times dropped)."""
    recovered, epoch, seq = int(row[0]), row[1], int(row[2])
    epoch = epoch.decode() if isinstance(epoch, bytes) else str(epoch)
    return Replay(bool(recovered), Position(epoch, seq), list(row[4::2]))


# -- in process (the embedded default) ---------------------------------------------------------------------


@dataclass(slots=True)
class _Topic:
    seq: int = 0
    last: float = 0.0
    events: deque[tuple[float, bytes]] = field(default_factory=deque)


class MemoryHistory:
    """The embedded default's history, in this process: lost on restart, which is a new epoch."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.epoch = new_epoch()
        self.topics: dict[str, _Topic] = {}
        self._appends = 0

    def append(self, topic: str, templates: Iterable[Template]) -> tuple[str, int, list[bytes]]:
        """Give the events their positions and keep them: (epoch, first offset, frames)."""
        now = self.clock()
        entry = self.topics.pop(topic, None) or _Topic()
        self.topics[topic] = entry  # Most recently used last: the sweep below looks at the front only.
        first = entry.seq + 1
        frames = [frame_at(template, topic, self.epoch, first + index) for index, template in enumerate(templates)]
        entry.seq += len(frames)
        entry.last = now
        events = entry.events
        events.extend((now, frame) for frame in frames)
        while len(events) > self.settings.size:
            events.popleft()
        cutoff = now - self.settings.secs
        while events and events[0][0] < cutoff:
            events.popleft()
        self._appends += 1
        if self._appends % 1000 == 0:
            self._sweep(now)
        return self.epoch, first, frames

    def position(self, topic: str) -> Position:
        entry = self.topics.get(topic)
        return Position(self.epoch, entry.seq) if entry else Position(NO_EPOCH, 0)

    def read(self, topic: str, after: Position) -> Replay:
        entry = self.topics.get(topic)
        seq = entry.seq if entry else 0
        head = Position(self.epoch, seq)
        if after.epoch == NO_EPOCH:
            after = Position(self.epoch, after.offset)  # "No event existed when I joined."
        if after.epoch != self.epoch or after.offset > seq:
            return Replay(False, head)
        if after.offset == seq or entry is None:
            return Replay(True, head)
        cutoff = self.clock() - self.settings.secs
        stored = [frame for published, frame in entry.events if published >= cutoff]
        first = seq - len(stored) + 1
        if after.offset + 1 < first:
            return Replay(False, head)
        return Replay(True, head, stored[after.offset + 1 - first :])

    def _sweep(self, now: float) -> None:
        # Topics idle past META_SECS are forgotten, as their Redis keys expire: bounded memory however many
        # topics a process ever saw.
        cutoff = now - self.settings.meta_secs
        while self.topics:
            topic, entry = next(iter(self.topics.items()))
            if entry.last >= cutoff:
                break
            del self.topics[topic]


def expiry_secs(secs: float) -> int:
    """A key's TTL in whole seconds, never 0 (which Redis refuses)."""
    return max(1, math.ceil(secs))
