"""Live subscriber counts of chosen topics across all workers (a video's viewer count).

Each worker reports its local count of every counted topic every CENSUS_SECS; the store sums the fresh
reports (a report older than three intervals is a dead worker's, and is dropped). The report and the
comparison with the last announced total happen in one atomic step, so when a total changes exactly one
worker learns it and publishes `census.changed` on `census.<topic>`.
"""

import asyncio
import math
import re
import time
from typing import Any, Protocol

from realtime import stores

CENSUS_PREFIX = "census."
STALE_AFTER_INTERVALS = 3

# KEYS: census hashes then last-announced keys, one pair per topic. ARGV: worker, now, stale_before, ttl,
# counts... Both keys live only as long as a report can stay fresh (ttl): a topic nobody counts any more is
# forgotten, so streams to made-up topics cannot pile up keys.
_REPORT_LUA = """
local n = #KEYS / 2
local worker, now, stale_before, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local changed = {}
for i = 1, n do
  local census, last = KEYS[i], KEYS[n + i]
  local count = tonumber(ARGV[4 + i])
  if count > 0 then
    redis.call('HSET', census, worker, count .. ':' .. now)
  else
    redis.call('HDEL', census, worker)
  end
  local total = 0
  local fields = redis.call('HGETALL', census)
  for j = 1, #fields, 2 do
    local value = fields[j + 1]
    local sep = string.find(value, ':')
    if tonumber(string.sub(value, sep + 1)) < stale_before then
      redis.call('HDEL', census, fields[j])
    else
      total = total + tonumber(string.sub(value, 1, sep - 1))
    end
  end
  if redis.call('HLEN', census) > 0 then
    redis.call('EXPIRE', census, ttl)
  end
  local previous = redis.call('GET', last)
  if previous ~= tostring(total) then
    table.insert(changed, i)
    table.insert(changed, total)
  end
  redis.call('SET', last, total, 'EX', ttl)
end
return changed
"""


class CensusStore(Protocol):
    async def areport(self, worker: str, counts: dict[str, int], now: float, stale_before: float) -> dict[str, int]:
        """Record this worker's counts; return the topics whose cluster-wide total changed, with the total."""

    async def atotal(self, topic: str, stale_before: float) -> int: ...


class MemoryCensus:
    """One process (the embedded default): the same semantics without Redis."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, tuple[int, float]]] = {}
        self.announced: dict[str, int] = {}

    async def areport(self, worker: str, counts: dict[str, int], now: float, stale_before: float) -> dict[str, int]:
        changed = {}
        for topic, count in counts.items():
            reports = self.reports.setdefault(topic, {})
            if count > 0:
                reports[worker] = (count, now)
            else:
                reports.pop(worker, None)
            total = await self.atotal(topic, stale_before)
            if self.announced.get(topic) != total:
                self.announced[topic] = total
                changed[topic] = total
        self._forget(stale_before)
        return changed

    def _forget(self, stale_before: float) -> None:
        # Bounded like the Redis keys: stale reports go, and a topic with none left (its zero announced) too.
        for topic in list(self.reports):
            reports = self.reports[topic]
            for worker in [w for w, (_, at) in reports.items() if at < stale_before]:
                del reports[worker]
            if not reports and self.announced.get(topic, 0) == 0:
                del self.reports[topic]
                self.announced.pop(topic, None)

    async def atotal(self, topic: str, stale_before: float) -> int:
        reports = self.reports.get(topic, {})
        return sum(count for count, at in reports.values() if at >= stale_before)


class RedisCensus:
    """Every worker's reports in Redis (realtime.stores): one hash per counted topic, summed atomically."""

    def __init__(self, url: str | None = None, prefix: str | None = None) -> None:
        self.url = url
        self.prefix = prefix or stores.key("census")
        self._script: Any = None

    async def areport(self, worker: str, counts: dict[str, int], now: float, stale_before: float) -> dict[str, int]:
        topics = list(counts)
        if not topics:
            return {}
        ttl = max(1, math.ceil(now - stale_before) + 1)
        # A topic's two keys live on the shard of its hash key: one script call per shard, run together.
        grouped = stores.by_server([self._key(topic) for topic in topics], self.url).items()

        async def report(server: str, indexes: list[int]) -> dict[str, int]:
            redis = stores.aclient(server)
            if self._script is None:
                self._script = redis.register_script(_REPORT_LUA)
            mine = [topics[i] for i in indexes]
            keys = [self._key(t) for t in mine] + [f"{self.prefix}-last:{t}" for t in mine]
            args: list[Any] = [worker, repr(now), repr(stale_before), ttl, *(counts[t] for t in mine)]
            flat = await self._script(keys=keys, args=args, client=redis)
            return {mine[int(flat[i]) - 1]: int(flat[i + 1]) for i in range(0, len(flat), 2)}

        changed: dict[str, int] = {}
        for found in await asyncio.gather(*(report(server, indexes) for server, indexes in grouped)):
            changed.update(found)
        return changed

    def _key(self, topic: str) -> str:
        return f"{self.prefix}:{topic}"

    async def atotal(self, topic: str, stale_before: float) -> int:
        total = 0
        key = self._key(topic)
        for value in (await stores.aclient(stores.server_for(key, self.url)).hgetall(key)).values():
            count, _, at = (value.decode() if isinstance(value, bytes) else value).partition(":")
            if float(at) >= stale_before:
                total += int(count)
        return total


class Census:
    """What a worker counts and reports. `pattern` selects the counted topics (a regular expression)."""

    def __init__(self, store: CensusStore, pattern: str, interval_secs: float) -> None:
        self.store = store
        self.pattern = re.compile(pattern) if pattern else None
        self.interval_secs = interval_secs
        self._reported: set[str] = set()

    def counts(self, topics: dict[str, set[Any]]) -> dict[str, int]:
        """Local counts of counted topics, with a zero for each topic that had subscribers last time."""
        if self.pattern is None:
            return {}
        counts = {topic: len(subs) for topic, subs in topics.items() if self.pattern.fullmatch(topic)}
        for topic in self._reported - counts.keys():
            counts[topic] = 0
        self._reported = {topic for topic, count in counts.items() if count}
        return counts

    async def areport(self, worker: str, topics: dict[str, set[Any]], now: float) -> dict[str, int]:
        counts = self.counts(topics)
        if not counts:
            return {}
        return await self.store.areport(worker, counts, now, self.stale_before(now))

    def stale_before(self, now: float) -> float:
        return now - STALE_AFTER_INTERVALS * self.interval_secs


_store: "stores.Slot[CensusStore]" = stores.Slot(memory=MemoryCensus, redis=RedisCensus)


def get_store() -> CensusStore:
    """This process's census store: in memory on the embedded default, Redis with REDIS_URL."""
    return _store.get()


async def acount(topic: str) -> int:
    """Async: the live subscriber count of a counted topic across all workers (0 if unknown)."""
    from realtime import conf  # Imported here: keeps the rest of this module free of Django settings.

    interval = conf.get("CENSUS_SECS")
    return await get_store().atotal(topic, time.time() - STALE_AFTER_INTERVALS * interval)


_census: "Census | None" = None


async def areport_job(worker: Any) -> None:
    """The census as a worker's periodic job (realtime.hooks): report local counts, announce changed totals.

    `worker` is the started realtime.worker.Worker; typed Any to keep this module free of the worker's imports.
    """
    from realtime import conf  # Imported here: keeps the rest of this module free of Django settings.
    from realtime.publishing import apublish
    from realtime.topics import MAX_TOPIC_LENGTH

    global _census
    if _census is None or _census.interval_secs != conf.get("CENSUS_SECS"):
        _census = Census(get_store(), conf.get("CENSUS_TOPICS"), conf.get("CENSUS_SECS"))
    changed = await _census.areport(worker.channel, worker.hub.topics, time.time())
    for topic, total in changed.items():
        announce_on = CENSUS_PREFIX + topic
        if len(announce_on) <= MAX_TOPIC_LENGTH:
            await apublish(announce_on, "census.changed", {"topic": topic, "count": total})
