"""A worker's registrations in the dispatcher's store: which topics it hosts, kept as leases.

The hub says which topics have local subscribers; the registry makes the dispatcher's topic -> workers map
agree with it, and renews the leases so a worker that dies without cleaning up (SIGKILL) drops out of every
topic within one lease.

Leases are renewed a slice at a time (`arenew`, one step about every second): the topics are dealt into the
steps of a cycle (a third of a lease) by their hash, so each registered topic's lease is renewed once per cycle,
one registered mid-cycle within two cycles (two thirds of a lease), and none lapses while the worker runs.
Each step also withdraws the topics of its slice no longer hosted. Renewing every topic at once, on every
worker in the same instant, stalled deliveries for 1-3 s each tick at 100,000 streams (docs/benchmarks.md A.14).

The two must converge whatever fails. A registration or renewal that fails raises RegistryUnavailable to its
caller (who answers 503 and rolls its subscription back) and marks the registry out of step; every second
while out of step, `aresync` makes the store match the hub as a whole: every hosted topic renewed or added,
every topic no longer hosted withdrawn. So a Redis restart (which loses every group), a failed `group_add` or
a failed deregistration is repaired within a second of Redis answering again.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TypeVar

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

from realtime.dispatcher import Dispatcher
from realtime.history import Position

T = TypeVar("T")

logger = logging.getLogger(__name__)

REFRESH_BATCH = 5000
# Topics per pipelined call of a routine renewal step: the worker's loop builds and parses each one between
# deliveries, and Redis runs it between publishes, so each stays a few milliseconds.
RENEW_BATCH = 500
# A routine renewal step about this often; a cycle of steps renews every lease once per third of a lease.
RENEW_STEP_SECS = 1.0
# Registry calls in flight at once: a burst of closing streams (100 x 128 topics) waits its turn instead of
# exhausting the Redis connection pool and failing.
MAX_CONCURRENT_CALLS = 32


def renewal_steps(lease_secs: float, step_secs: float = RENEW_STEP_SECS) -> int:
    """Steps per renewal cycle (a third of a lease) so that a step comes about every `step_secs`; at least 1."""
    return max(1, round(lease_secs / 3 / step_secs))


class RegistryUnavailable(RedisError):
    """The dispatcher's store refused a registration change; the registry will repair it by itself.

    A RedisError: an endpoint that meets it where nothing more precise applies answers 503 (realtime.http).
    """


class Registry:
    """Async; one event loop. `hosted()` gives the topics this worker should be registered for now."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        channel: str,
        hosted: Callable[[], Collection[str]],
        *,
        always: Collection[str] = (),
        max_concurrent_calls: int = MAX_CONCURRENT_CALLS,
        positioned: Callable[[str, Position | None], None] | None = None,
        renew_steps: int = 1,
    ) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.hosted = hosted
        # Registered for the worker's whole life whatever its streams hold (the control group).
        self.always = frozenset(always)
        # Told the topic's position at the instant this worker joined it (realtime.sequencer).
        self.positioned = positioned
        self.registered: set[str] = set()
        # Set by any failure, cleared by a successful resync: the worker then resyncs every second.
        self.out_of_step = False
        self.stats = {"registry_failures": 0, "registry_resyncs": 0, "registry_shard_checks": 0}
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}  # topic -> (lock, [users])
        self._calls = asyncio.Semaphore(max_concurrent_calls)
        self._run_ids: list[str] | None = None  # each shard's, last seen (realtime.layers: channels-redis)
        # The routine renewal: `renew_steps` calls of `arenew` per cycle, the next one being `_step` of `_slices`.
        self.renew_steps = max(1, renew_steps)
        self._step = 0
        self._slices: list[list[str]] = []

    async def async_topics(self, topics: list[str]) -> None:
        """Make the registration of each topic match the hub; returns once all are in place.

        Raises RegistryUnavailable if the store refused any of them (the others are in place).
        """
        if len(topics) == 1:
            await self._sync(topics[0])
        elif topics:
            await self._all([self._sync(topic) for topic in topics])

    @staticmethod
    async def _all(changes: Sequence[Awaitable[None]]) -> None:
        # Every change runs to its end even if another failed; the first failure is raised after.
        results = await asyncio.gather(*changes, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _sync(self, topic: str, *, leftover: bool = False) -> None:
        # Serialised per topic and decided when the lock is held, so a deregistration scheduled by a closing
        # stream can never undo the registration a new subscriber needs, and a second subscriber returns only
        # once the first one's registration is in place.
        entry = self._locks.get(topic)
        if entry is None:
            entry = self._locks[topic] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                wanted = topic in self.always or topic in self.hosted()
                if wanted and topic not in self.registered:
                    position = await self._call(self.dispatcher.aregister(topic, self.channel))
                    self.registered.add(topic)
                    if self.positioned is not None:
                        self.positioned(topic, position)
                elif not wanted and (topic in self.registered or leftover):
                    # leftover: a renewal may have re-added it in the store after its deregistration.
                    self.registered.discard(topic)
                    try:
                        await self._call(self.dispatcher.aderegister(topic, self.channel))
                    except RegistryUnavailable:
                        self.registered.add(topic)  # Still in the store: the resync withdraws it.
                        raise
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[topic]

    async def _call(self, change: Awaitable[T]) -> T:
        async with self._calls:
            try:
                return await change
            except (RedisError, OSError, TypeError, ValueError) as exc:
                # TypeError/ValueError: what channels answers for a group name it refuses.
                self.out_of_step = True
                self.stats["registry_failures"] += 1
                logger.warning("worker %s: a registration change failed (%s); it will be repaired", self.channel, exc)
                raise RegistryUnavailable(f"the real-time registry is unreachable: {exc}") from exc

    async def aresync(self) -> None:
        """Make the store match the hub as a whole: renew every hosted topic's lease, add the missing ones,
        withdraw the ones no longer hosted. Pipelined per Redis shard; raises on failure (out of step stays)."""
        hosted = set(self.hosted()) | self.always
        stale = self.registered - hosted
        topics = list(hosted)
        try:
            for start in range(0, len(topics), REFRESH_BATCH):
                async with self._calls:
                    await self.dispatcher.arefresh(topics[start : start + REFRESH_BATCH], self.channel)
            for topic in stale:
                async with self._calls:
                    await self.dispatcher.aderegister(topic, self.channel)
        except (RedisError, OSError) as exc:
            self.out_of_step = True
            self.stats["registry_failures"] += 1
            raise RegistryUnavailable(f"the real-time registry is unreachable: {exc}") from exc
        # Topics that came or went meanwhile were handled by their own _sync; only what this pass did counts.
        now_hosted = set(self.hosted()) | self.always
        self.registered |= hosted & now_hosted
        self.registered -= stale - now_hosted
        if self.out_of_step:
            logger.info("worker %s: registrations repaired (%d topics)", self.channel, len(hosted))
            self.stats["registry_resyncs"] += 1
        self.out_of_step = False

    async def arenew(self) -> None:
        """One step of the routine renewal (the worker calls it `renew_steps` times per third of a lease): renew
        the leases of this step's slice of the registered topics, withdraw those of the slice no longer hosted.

        Does nothing while out of step: the repair's full resync renews everything then. Raises
        RegistryUnavailable on failure (out of step), like every other registration change.
        """
        if self.out_of_step:
            return
        if self._step == 0:
            self._deal()
        topics = self._slices[self._step]
        self._slices[self._step] = []
        self._step = (self._step + 1) % self.renew_steps
        hosted = self.hosted()
        renew: list[str] = []
        changes: list[str] = []  # withdrawn, or hosted but not registered: each under its topic's lock
        for topic in topics:
            wanted = topic in self.always or topic in hosted
            if topic in self.registered and wanted:
                renew.append(topic)
            elif topic in self.registered or (wanted and topic not in self._locks):
                # Withdrawn if no longer hosted; registered if hosted with no change under way (left by a failure).
                changes.append(topic)
        try:
            for start in range(0, len(renew), RENEW_BATCH):
                async with self._calls:
                    await self.dispatcher.arefresh(renew[start : start + RENEW_BATCH], self.channel)
        except (RedisError, OSError) as exc:
            self.out_of_step = True
            self.stats["registry_failures"] += 1
            logger.warning("worker %s: a lease renewal failed (%s); it will be repaired", self.channel, exc)
            raise RegistryUnavailable(f"the real-time registry is unreachable: {exc}") from exc
        # A topic let go while its renewal was in flight may be back in the store (the renewal landed after
        # its deregistration): withdraw it again, under its lock, unless it is wanted by now.
        hosted = self.hosted()
        leftovers = [t for t in renew if t not in self.registered and t not in self.always and t not in hosted]
        await self._all(
            [self._sync(topic) for topic in changes] + [self._sync(topic, leftover=True) for topic in leftovers]
        )

    def _deal(self) -> None:
        # By hash, stable for the process's life: a topic is renewed at the same step of every cycle, so exactly
        # once per cycle, and the slices are about equal whatever the topics are called.
        steps = self.renew_steps
        self._slices = [[] for _ in range(steps)]
        for topic in {*self.registered, *self.hosted(), *self.always}:
            self._slices[hash(topic) % steps].append(topic)

    async def arepair(self) -> None:
        """Resync only if out of step (the worker calls this every second)."""
        if self.out_of_step:
            await self.aresync()

    async def acheck_shards(self) -> None:
        """Put the registry out of step if a channel-layer shard is unreachable or is not the server it was
        (its run_id changed: restarted, or a Sentinel failover). The worker calls this every second.

        With several shards, the worker's receive loop reads from one: a restart of another, which loses the
        groups and history it held, fails none of this worker's calls and would go unnoticed until the next
        lease tick. A Sentinel failover changes the run_id too (the replica's writes may lag the primary's).
        """
        layer = self.dispatcher.layer
        if self.out_of_step or not isinstance(layer, RedisChannelLayer):
            return
        try:
            infos = await asyncio.gather(*(layer.connection(i).info("server") for i in range(layer.ring_size)))
        except (RedisError, OSError) as exc:
            self.stats["registry_failures"] += 1
            logger.warning(
                "worker %s: a Redis shard does not answer (%s); registrations will be repaired", self.channel, exc
            )
            self.out_of_step = True
            return
        self.stats["registry_shard_checks"] += 1
        run_ids = [str(info.get("run_id", "")) for info in infos]
        replaced = self._run_ids is not None and run_ids != self._run_ids
        if replaced:
            logger.warning("worker %s: a Redis shard restarted or failed over; registrations resync", self.channel)
            self.out_of_step = True
        self._run_ids = run_ids

    async def awithdraw(self, *, timeout_secs: float) -> int:
        """Give up every registration at once (a clean stop) instead of leaving them to expire; returns how many."""
        topics = list(self.registered)
        self.registered.clear()
        try:
            async with asyncio.timeout(timeout_secs):
                await asyncio.gather(
                    *(self.dispatcher.aderegister(topic, self.channel) for topic in topics), return_exceptions=True
                )
        except TimeoutError:
            logger.warning("worker %s left some registrations to expire with their lease", self.channel)
        return len(topics)
