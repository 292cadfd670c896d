"""A worker's registrations in the dispatcher's store: which topics it hosts, kept as leases.

The hub says which topics have local subscribers; the registry makes the dispatcher's topic -> workers map
agree with it, one topic at a time, and renews the leases so a worker that dies without cleaning up
(SIGKILL) drops out of every topic within one lease.
"""

import asyncio
import logging
from collections.abc import Callable

from realtime.dispatcher import Dispatcher

logger = logging.getLogger(__name__)

REFRESH_BATCH = 5000


class Registry:
    """Async; one event loop. `hosts(topic)` answers whether this worker should be registered for a topic."""

    def __init__(self, dispatcher: Dispatcher, channel: str, hosts: Callable[[str], bool]) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.hosts = hosts
        self.registered: set[str] = set()
        self._locks: dict[str, list[asyncio.Lock | int]] = {}  # topic -> [lock, users]

    async def async_topics(self, topics: list[str]) -> None:
        """Make the registration of each topic match the hub; returns once all are in place."""
        if len(topics) == 1:
            await self._sync(topics[0])
        elif topics:
            await asyncio.gather(*(self._sync(topic) for topic in topics))

    async def _sync(self, topic: str) -> None:
        # Serialised per topic and decided when the lock is held, so a deregistration scheduled by a closing
        # stream can never undo the registration a new subscriber needs, and a second subscriber returns only
        # once the first one's registration is in place.
        entry = self._locks.get(topic)
        if entry is None:
            entry = self._locks[topic] = [asyncio.Lock(), 0]
        lock: asyncio.Lock = entry[0]  # type: ignore[assignment]
        entry[1] += 1  # type: ignore[operator]
        try:
            async with lock:
                wanted = self.hosts(topic)
                if wanted and topic not in self.registered:
                    await self.dispatcher.aregister(topic, self.channel)
                    self.registered.add(topic)
                elif not wanted and topic in self.registered:
                    self.registered.discard(topic)
                    await self.dispatcher.aderegister(topic, self.channel)
        finally:
            entry[1] -= 1  # type: ignore[operator]
            if entry[1] == 0:
                del self._locks[topic]

    async def arefresh(self) -> None:
        """Renew every lease of this worker, in pipelined batches."""
        topics = list(self.registered)
        for start in range(0, len(topics), REFRESH_BATCH):
            await self.dispatcher.arefresh(topics[start : start + REFRESH_BATCH], self.channel)

    async def awithdraw(self, *, timeout_secs: float) -> int:
        """Give up every registration at once (a clean stop) instead of leaving them to expire; returns how many."""
        topics = list(self.registered)
        self.registered.clear()
        try:
            async with asyncio.timeout(timeout_secs):
                await asyncio.gather(*(self.dispatcher.aderegister(topic, self.channel) for topic in topics))
        except TimeoutError:
            logger.warning("worker %s left some registrations to expire with their lease", self.channel)
        return len(topics)
