"""Level 1 of the fan-out: topic -> the workers hosting its subscribers, kept in the channel layer.

The only module that talks to the channel layer. Each topic is a channel-layer group whose members are
WORKER channels (one per process, never one per connection), so a publish costs one message per worker
that hosts subscribers, and none to the others. Memberships are leases: the layer's `group_expiry` is
set to REALTIME LEASE_SECS and each worker re-adds its topics every third of it, so a worker that dies
without cleaning up (SIGKILL) drops out of every group within one lease.
"""

import asyncio
import logging
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

WORKER_CHANNEL_PREFIX = "realtime.worker"
EVENT = "rt.event"
RPC = "rt.rpc"
REPLY = "rt.reply"


class DispatchUnavailable(Exception):
    """The channel layer (Redis) could not be reached: nothing was sent."""


class Dispatcher:
    """Registration and delivery over one channel layer. Async; one event loop at a time.

    Publishing is group-commit: while one round of sends is in flight, new events queue up, and the next
    round sends every frame pending for a topic in ONE message per hosting worker, in call order. An idle
    dispatcher sends at once (no added latency); a busy one sends fewer, larger messages, which is what
    keeps Redis round trips per event falling as the publish rate rises.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.stats = {"published": 0, "group_sends": 0, "registrations": 0, "deregistrations": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: dict[str, list[bytes]] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def anew_worker_channel(self) -> str:
        return await self.layer.new_channel(WORKER_CHANNEL_PREFIX)

    async def aregister(self, topic: str, worker_channel: str) -> None:
        """Add (or refresh the lease of) `worker_channel` as a host of `topic`."""
        await self.layer.group_add(topic, worker_channel)
        self.stats["registrations"] += 1

    async def aderegister(self, topic: str, worker_channel: str) -> None:
        await self.layer.group_discard(topic, worker_channel)
        self.stats["deregistrations"] += 1

    async def asend_event(self, topic: str, frame: bytes) -> None:
        """Send one encoded event to every worker hosting `topic`; returns once it is handed to the layer.

        Raises DispatchUnavailable if the channel layer could not be reached (the event was not sent).
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (tests, management commands): state of a dead loop is meaningless here.
            self._loop, self._pending, self._waiters, self._flusher = loop, {}, {}, None
        done: asyncio.Future[None] = loop.create_future()
        self._pending.setdefault(topic, []).append(frame)
        self._waiters.setdefault(topic, []).append(done)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        await done

    async def _flush(self) -> None:
        while self._pending:
            pending, waiters = self._pending, self._waiters
            self._pending, self._waiters = {}, {}
            topics = list(pending)
            results = await asyncio.gather(
                *(self._group_send(topic, pending[topic]) for topic in topics), return_exceptions=True
            )
            for topic, result in zip(topics, results, strict=True):
                for done in waiters[topic]:
                    if done.done():
                        continue
                    if isinstance(result, BaseException):
                        done.set_exception(result)
                    else:
                        done.set_result(None)

    async def _group_send(self, topic: str, frames: list[bytes]) -> None:
        try:
            await self.layer.group_send(topic, {"type": EVENT, "topic": topic, "frames": frames})
        except (RedisError, OSError) as exc:
            raise DispatchUnavailable(f"the channel layer is unreachable: {exc}") from exc
        self.stats["published"] += len(frames)
        self.stats["group_sends"] += 1

    async def asend(self, worker_channel: str, message: dict[str, Any]) -> None:
        await self.layer.send(worker_channel, message)

    async def areceive(self, worker_channel: str) -> dict[str, Any]:
        return await self.layer.receive(worker_channel)


_dispatcher: Dispatcher | None = None


def get_dispatcher() -> Dispatcher:
    """The process's dispatcher over the default channel layer."""
    global _dispatcher
    layer = get_channel_layer()
    if _dispatcher is None or _dispatcher.layer is not layer:
        if layer is None:
            raise RuntimeError("CHANNEL_LAYERS has no 'default' layer: the realtime platform needs one")
        _dispatcher = Dispatcher(layer)
    return _dispatcher


def is_worker_channel(name: str) -> bool:
    return name.startswith(WORKER_CHANNEL_PREFIX + ".") and "!" in name
