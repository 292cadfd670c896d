"""Live subscribers of chosen topics across all workers: a video's viewer count and its signed-in watchers.

Each worker reports, every CENSUS_SECS, its local count of every counted topic and the signed-in members
among those subscribers (anonymous ones are counted, never listed); the store sums the fresh counts and
unites the fresh member lists (a report older than three intervals is a dead worker's, and is dropped). The
report and the comparison with the last announcement happen in one atomic step, so when a total or the member
list changes exactly one worker learns it and publishes `census.changed` {"topic", "count", "members"} on
`census.<topic>`.

The member list is bounded: each worker lists at most MAX_LISTED_MEMBERS of a topic's members (the lowest
ids) and the union keeps the lowest MAX_LISTED_MEMBERS ids, so an event and a Redis value stay small on a
video with a crowd; the count still counts everyone. The census knows ids only: names are the app's business.
"""

import asyncio
import math
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from realtime import stores

CENSUS_PREFIX = "census."
MEMBERS_PREFIX = "census.members."  # the same announcement with the members listed: signed-in readers only
STALE_AFTER_INTERVALS = 3
MAX_LISTED_MEMBERS = 100


@dataclass(frozen=True)
class Tally:
    """A topic's census across all workers: how many subscribers, and which signed-in members (sorted, bounded)."""

    count: int
    members: tuple[int, ...] = ()


def bounded(members: Iterable[int]) -> tuple[int, ...]:
    """The members a census lists: distinct, sorted, the lowest MAX_LISTED_MEMBERS (a stable choice: no flapping)."""
    return tuple(sorted(set(members))[:MAX_LISTED_MEMBERS])


# KEYS: four per topic, in four runs: census hashes (worker -> "count:reported_at"), last-announced totals,
# member hashes (worker -> "id,id,..."), last-announced member lists. ARGV: worker, now, stale_before, ttl,
# limit, then count and member list per topic. Every key lives only as long as a report can stay fresh (ttl),
# and a topic nobody signed in watches keeps no member key: streams to made-up topics cannot pile up keys.
# Members sit in their own hash so the count hash keeps the format workers of the previous release parse.
_REPORT_LUA = """
local n = #KEYS / 4
local worker, now, stale_before, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local by_number = function(a, b) return tonumber(a) < tonumber(b) end
local changed = {}
for i = 1, n do
  local census, last, members, last_members = KEYS[i], KEYS[n + i], KEYS[2 * n + i], KEYS[3 * n + i]
  local count = tonumber(ARGV[4 + 2 * i])
  local listed = ARGV[5 + 2 * i]
  if count > 0 then
    redis.call('HSET', census, worker, count .. ':' .. now)
  else
    redis.call('HDEL', census, worker)
  end
  if count > 0 and listed ~= '' then
    redis.call('HSET', members, worker, listed)
  else
    redis.call('HDEL', members, worker)
  end
  local total = 0
  local fresh = {}
  local fields = redis.call('HGETALL', census)
  for j = 1, #fields, 2 do
    local value = fields[j + 1]
    local sep = string.find(value, ':')
    if tonumber(string.sub(value, sep + 1)) < stale_before then
      redis.call('HDEL', census, fields[j])
    else
      total = total + tonumber(string.sub(value, 1, sep - 1))
      fresh[fields[j]] = true
    end
  end
  if redis.call('HLEN', census) > 0 then
    redis.call('EXPIRE', census, ttl)
  end
  local seen, ids = {}, {}
  local lists = redis.call('HGETALL', members)
  for j = 1, #lists, 2 do
    if fresh[lists[j]] then
      for id in string.gmatch(lists[j + 1], '[0-9]+') do
        if not seen[id] then
          seen[id] = true
          table.insert(ids, id)
        end
      end
    else
      redis.call('HDEL', members, lists[j])
    end
  end
  if redis.call('HLEN', members) > 0 then
    redis.call('EXPIRE', members, ttl)
  end
  table.sort(ids, by_number)
  while #ids > limit do
    table.remove(ids)
  end
  local union = table.concat(ids, ',')
  local previous = redis.call('GET', last)
  local previous_members = redis.call('GET', last_members) or ''
  if previous ~= tostring(total) or previous_members ~= union then
    table.insert(changed, i)
    table.insert(changed, total)
    table.insert(changed, union)
  end
  redis.call('SET', last, total, 'EX', ttl)
  if union == '' then
    redis.call('DEL', last_members)
  else
    redis.call('SET', last_members, union, 'EX', ttl)
  end
end
return changed
"""


class CensusStore(Protocol):
    async def areport(
        self,
        worker: str,
        counts: Mapping[str, int],
        now: float,
        stale_before: float,
        members: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, Tally]:
        """Record this worker's counts and listed members (by topic; none if absent); return the topics whose
        cluster-wide tally changed, with the tally."""

    async def atally(self, topic: str, stale_before: float) -> Tally: ...


class MemoryCensus:
    """One process (the embedded default): the same semantics without Redis."""

    def __init__(self) -> None:
        # topic -> worker -> (count, reported_at, listed members)
        self.reports: dict[str, dict[str, tuple[int, float, tuple[int, ...]]]] = {}
        self.announced: dict[str, Tally] = {}

    async def areport(
        self,
        worker: str,
        counts: Mapping[str, int],
        now: float,
        stale_before: float,
        members: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, Tally]:
        changed = {}
        for topic, count in counts.items():
            reports = self.reports.setdefault(topic, {})
            if count > 0:
                reports[worker] = (count, now, bounded((members or {}).get(topic, ())))
            else:
                reports.pop(worker, None)
            tally = await self.atally(topic, stale_before)
            if self.announced.get(topic, Tally(-1)) != tally:
                self.announced[topic] = tally
                changed[topic] = tally
        self._forget(stale_before)
        return changed

    def _forget(self, stale_before: float) -> None:
        # Bounded like the Redis keys: stale reports go, and a topic with none left (its zero announced) too.
        for topic in list(self.reports):
            reports = self.reports[topic]
            for worker in [w for w, (_, at, _) in reports.items() if at < stale_before]:
                del reports[worker]
            if not reports and self.announced.get(topic, Tally(0)).count == 0:
                del self.reports[topic]
                self.announced.pop(topic, None)

    async def atally(self, topic: str, stale_before: float) -> Tally:
        fresh = [(count, listed) for count, at, listed in self.reports.get(topic, {}).values() if at >= stale_before]
        return Tally(sum(count for count, _ in fresh), bounded(m for _, listed in fresh for m in listed))

    async def atotal(self, topic: str, stale_before: float) -> int:
        return (await self.atally(topic, stale_before)).count


class RedisCensus:
    """Every worker's reports in Redis (realtime.stores): hashes per counted topic, summed and united atomically."""

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        self.url = url
        self.prefix = prefix or stores.key("census")
        self._script: Any = None

    async def areport(
        self,
        worker: str,
        counts: Mapping[str, int],
        now: float,
        stale_before: float,
        members: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, Tally]:
        topics = list(counts)
        if not topics:
            return {}
        listed = {topic: ",".join(map(str, bounded((members or {}).get(topic, ())))) for topic in topics}
        ttl = max(1, math.ceil(now - stale_before) + 1)
        # A topic's keys live on the shard of its hash key: one script call per shard, run together.
        grouped = stores.by_server([self._key(topic) for topic in topics], self.url).items()

        async def report(server: str, indexes: list[int]) -> dict[str, Tally]:
            redis = stores.aclient(server)
            if self._script is None:
                self._script = redis.register_script(_REPORT_LUA)
            mine = [topics[i] for i in indexes]
            keys = [
                *(self._key(t) for t in mine),
                *(f"{self.prefix}-last:{t}" for t in mine),
                *(self._members_key(t) for t in mine),
                *(f"{self.prefix}-last-members:{t}" for t in mine),
            ]
            args: list[Any] = [worker, repr(now), repr(stale_before), ttl, MAX_LISTED_MEMBERS]
            for topic in mine:
                args += [counts[topic], listed[topic]]
            flat = await self._script(keys=keys, args=args, client=redis)
            return {
                mine[int(flat[i]) - 1]: Tally(int(flat[i + 1]), _parse_ids(flat[i + 2])) for i in range(0, len(flat), 3)
            }

        changed: dict[str, Tally] = {}
        for found in await asyncio.gather(*(report(server, indexes) for server, indexes in grouped)):
            changed.update(found)
        return changed

    def _key(self, topic: str) -> str:
        return f"{self.prefix}:{topic}"

    def _members_key(self, topic: str) -> str:
        return f"{self.prefix}-members:{topic}"

    async def atally(self, topic: str, stale_before: float) -> Tally:
        key = self._key(topic)
        redis = stores.aclient(stores.server_for(key, self.url))
        async with redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.hgetall(self._members_key(topic))
            counts, lists = await pipe.execute()
        total = 0
        fresh = set()
        for worker, value in counts.items():
            count, _, at = _text(value).partition(":")
            if float(at) >= stale_before:
                total += int(count)
                fresh.add(_text(worker))
        members = (m for worker, ids in lists.items() if _text(worker) in fresh for m in _parse_ids(ids))
        return Tally(total, bounded(members))

    async def atotal(self, topic: str, stale_before: float) -> int:
        return (await self.atally(topic, stale_before)).count


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _parse_ids(value: bytes | str) -> tuple[int, ...]:
    text = _text(value)
    return tuple(int(part) for part in text.split(",")) if text else ()


class Census:
    """What a worker counts and reports. `pattern` selects the counted topics (a regular expression)."""

    def __init__(self, store: CensusStore, pattern: str, interval_secs: float) -> None:
        self.store = store
        self.pattern = re.compile(pattern) if pattern else None
        self.interval_secs = interval_secs
        self._reported: set[str] = set()

    def counts(self, topics: Mapping[str, Iterable[Any]]) -> dict[str, int]:
        """Local counts of counted topics, with a zero for each topic that had subscribers last time."""
        if self.pattern is None:
            return {}
        counts = {topic: len(list(subs)) for topic, subs in topics.items() if self.pattern.fullmatch(topic)}
        for topic in self._reported - counts.keys():
            counts[topic] = 0
        self._reported = {topic for topic, count in counts.items() if count}
        return counts

    @staticmethod
    def members(topics: Mapping[str, Iterable[Any]], counted: Iterable[str]) -> dict[str, tuple[int, ...]]:
        """The signed-in members among each counted topic's local subscribers (connections with a `member_id`)."""
        listed = {}
        for topic in counted:
            ids = bounded(m for conn in topics.get(topic, ()) if (m := getattr(conn, "member_id", None)) is not None)
            if ids:
                listed[topic] = ids
        return listed

    async def areport(self, worker: str, topics: Mapping[str, Iterable[Any]], now: float) -> dict[str, Tally]:
        counts = self.counts(topics)
        if not counts:
            return {}
        # One pass over each counted topic's subscribers per interval: O(local subscriptions of counted topics).
        members = self.members(topics, [topic for topic, count in counts.items() if count])
        return await self.store.areport(worker, counts, now, self.stale_before(now), members)

    def stale_before(self, now: float) -> float:
        return now - STALE_AFTER_INTERVALS * self.interval_secs


_store: "stores.Slot[CensusStore]" = stores.Slot(memory=MemoryCensus, redis=RedisCensus)


def get_store() -> CensusStore:
    """This process's census store: in memory on the embedded default, Redis with REDIS_URL."""
    return _store.get()


def _stale_before() -> float:
    from realtime import conf  # Imported here: keeps the rest of this module free of Django settings.

    return time.time() - STALE_AFTER_INTERVALS * float(conf.get("CENSUS_SECS"))


async def acount(topic: str) -> int:
    """Async: the live subscriber count of a counted topic across all workers (0 if unknown)."""
    return (await get_store().atally(topic, _stale_before())).count


async def atally(topic: str) -> Tally:
    """Async: a counted topic's subscriber count and listed signed-in members across all workers (a page's
    first render; `census.changed` carries the same afterwards)."""
    return await get_store().atally(topic, _stale_before())


_census: "Census | None" = None


async def areport_job(worker: Any) -> None:
    """The census as a worker's periodic job (realtime.hooks): report local counts and members, announce changes.

    `worker` is the started realtime.worker.Worker; typed Any to keep this module free of the worker's imports.
    Reads only `worker.channel` and `worker.hub.topics` (topic -> connections, each with a `member_id`).
    """
    from realtime import conf  # Imported here: keeps the rest of this module free of Django settings.
    from realtime.publishing import apublish
    from realtime.topics import MAX_TOPIC_LENGTH

    global _census
    if _census is None or _census.interval_secs != conf.get("CENSUS_SECS"):
        _census = Census(get_store(), conf.get("CENSUS_TOPICS"), conf.get("CENSUS_SECS"))
    changed = await _census.areport(worker.channel, worker.hub.topics, time.time())
    for topic, tally in changed.items():
        # The count for anyone; the count with who is watching for signed-in members only (realtime.apps).
        announce_on, members_on = CENSUS_PREFIX + topic, MEMBERS_PREFIX + topic
        if len(announce_on) <= MAX_TOPIC_LENGTH:
            await apublish(announce_on, "census.changed", {"topic": topic, "count": tally.count})
        if len(members_on) <= MAX_TOPIC_LENGTH:
            data = {"topic": topic, "count": tally.count, "members": list(tally.members)}
            await apublish(members_on, "census.changed", data)
