"""The life of one worker process: its hub, its worker channel, its loops, start and stop.

One Worker per process (per event loop), started by the first request that needs it (Daphne has no ASGI
lifespan) or by the lifespan's startup where the server has one. It receives events for its topics on its
worker channel and fans them out through the outbox and the hub; it answers subscription requests for the
connections it holds (realtime.rpc), keeps its registrations (realtime.registry), keep-alives, and runs the
hooks other apps registered (realtime.hooks).
"""

import asyncio
import contextlib
import contextvars
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable

from redis.exceptions import RedisError

from realtime import conf, hooks, policies, revocation, servers, sse, tokens
from realtime.dispatcher import (
    EVENT,
    EVENTS,
    REPLY,
    RPC,
    Dispatcher,
    LayerMessage,
    get_dispatcher,
    is_worker_channel,
)
from realtime.hub import Connection, Hub
from realtime.outbox import Outbox
from realtime.registry import Registry, RegistryUnavailable
from realtime.rpc import (
    FORBIDDEN_TOPIC,
    NOT_YOUR_CONNECTION,
    TOO_MANY_TOPICS,
    UNAVAILABLE,
    UNKNOWN_CONNECTION,
    Refused,
    Rpc,
)
from realtime.topics import ForbiddenTopic, TooManyTopics, check_topic_count

logger = logging.getLogger(__name__)

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
_ERROR_BACKOFF_SECS = 1.0
# While the registry is out of step with the hub (a Redis fault), it is resynced this often.
REPAIR_SECS = 1.0


class Worker:
    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        keepalive_secs: float = 15.0,
        lease_secs: float = 60.0,
        max_topics: int = 128,
        rpc_timeout_secs: float = 3.0,
        heartbeat_secs: float = 30.0,
        flush_secs: float = 0.02,
    ) -> None:
        self.dispatcher = dispatcher
        self.hub = Hub()
        self.keepalive_secs = keepalive_secs
        self.lease_secs = lease_secs
        self.max_topics = max_topics
        self.rpc_timeout_secs = rpc_timeout_secs
        self.heartbeat_secs = heartbeat_secs
        self.outbox = Outbox(self._deliver, flush_secs=flush_secs)
        self.channel = ""
        self.registry = Registry(dispatcher, "", self._hosted)
        self.rpc = Rpc(dispatcher, "", timeout_secs=rpc_timeout_secs)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped = False
        self.stats = {"received_events": 0, "received_messages": 0, "stray_events": 0, "revoked_streams": 0}

    # -- life cycle -------------------------------------------------------------------------------

    async def astart(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = await self.dispatcher.anew_worker_channel()
        self.registry = Registry(self.dispatcher, self.channel, self._hosted, always=[revocation.CONTROL_GROUP])
        self.rpc = Rpc(self.dispatcher, self.channel, timeout_secs=self.rpc_timeout_secs)
        self._tasks = [
            self._task(self._receive_loop(), name="realtime-receive"),
            self._task(self.outbox.run(), name="realtime-flush"),
            self._task(self._every(self.lease_secs / 3, self.registry.aresync), name="realtime-leases"),
            self._task(self._every(REPAIR_SECS, self.registry.arepair, quiet=True), name="realtime-repair"),
            self._task(self._every(self.keepalive_secs, self._keepalive), name="realtime-keepalive"),
        ]
        if hooks.member_heartbeats:
            self._tasks.append(self._task(self._every(self.heartbeat_secs, self._heartbeat), name="realtime-heartbeat"))
        for periodic in hooks.periodic_jobs:
            job = periodic.job
            self._tasks.append(
                self._task(self._every(periodic.interval_secs(), self._bind(job)), name=f"realtime-{job.__name__}")
            )
        for background in hooks.background_tasks:
            self._tasks.append(self._task(self._forever(background), name=f"realtime-{background.__name__}"))
        # Revocations reach every worker through the control group: joined before the first stream is served.
        await self.registry.async_topics([revocation.CONTROL_GROUP])
        logger.info("realtime worker %s started", self.channel)

    async def astop(self, *, timeout_secs: float = 5.0) -> None:
        """End every stream cleanly, cancel the loops, and give up every registration at once.

        Run on the server's shutdown (Daphne's reactor trigger, or the ASGI lifespan); a SIGKILLed worker
        relies on the leases instead.
        """
        if self.stopped:
            return
        self.stopped = True
        for conn in list(self.hub.connections.values()):
            # The final chunk: every client library sees a clean end and reconnects (to another worker).
            conn.close()
        for task in self._tasks:
            task.cancel()
        withdrawn = await self.registry.awithdraw(timeout_secs=timeout_secs)
        logger.info("realtime worker %s stopped: %d registrations withdrawn", self.channel, withdrawn)

    # -- connections ------------------------------------------------------------------------------

    def new_connection_id(self) -> str:
        """144 random bits, then this worker's channel so any worker can route a request for it."""
        return f"{secrets.token_urlsafe(18)}~{self.channel}"

    async def aattach(self, conn: Connection, topics: Iterable[str] = ()) -> None:
        """Add a stream and its first topics; returns once this worker is registered for all of them."""
        self.hub.add(conn)
        await self.registry.async_topics(self.hub.subscribe(conn, topics))
        if conn.member_id is not None:
            self._beat([conn.member_id])

    def detach(self, conn: Connection) -> None:
        """Forget a closed stream (once). Sync, so it runs even in a cancelled task; deregistration follows."""
        conn.closed = True
        if self.hub.get(conn.id) is not conn:
            return
        emptied = self.hub.remove(conn)
        if emptied:
            self._spawn(self.registry.async_topics(emptied))
        if conn.member_id is not None:
            # A last beat at the close: the member's offline window starts now, not at the previous beat, so a
            # reconnect anywhere within the whole window changes nothing.
            self._beat([conn.member_id])

    async def achange(self, connection_id: str, op: str, topics: list[str], member_id: int | None) -> list[str]:
        """Subscribe or unsubscribe a connection held by any worker; returns its resulting topics.

        Raises Refused (unknown_connection, not_your_connection, forbidden_topic, too_many_topics).
        """
        _, _, channel = connection_id.partition("~")
        if channel == self.channel:
            return await self._change_local(connection_id, op, topics, member_id)
        # A worker that is not in the control group is not alive (or never was): refused at once, without a
        # message to a channel nobody reads (it held the request for the RPC timeout and left a Redis key).
        if not is_worker_channel(channel) or not await self._alive(channel):
            raise Refused(UNKNOWN_CONNECTION, "no open stream has this connection_id: open /realtime/connect again")
        request = {"op": op, "connection_id": connection_id, "topics": topics, "member_id": member_id}
        result: list[str] = await self.rpc.acall(channel, request)
        return result

    async def _change_local(self, connection_id: str, op: str, topics: list[str], member_id: int | None) -> list[str]:
        conn = self.hub.get(connection_id)
        if conn is None or conn.closed:
            raise Refused(UNKNOWN_CONNECTION, "no open stream has this connection_id: open /realtime/connect again")
        if conn.member_id is not None and conn.member_id != member_id:
            raise Refused(NOT_YOUR_CONNECTION, "this stream belongs to another member")
        if op == SUBSCRIBE:
            try:
                policies.check_read(topics, conn.member_id, conf.get("OPEN_NAMESPACES"))
                check_topic_count(len(conn.topics | set(topics)), self.max_topics)
            except ForbiddenTopic as exc:
                raise Refused(FORBIDDEN_TOPIC, str(exc)) from None
            except TooManyTopics as exc:
                raise Refused(TOO_MANY_TOPICS, str(exc)) from None
            added = [topic for topic in topics if topic not in conn.topics]
            try:
                await self.registry.async_topics(self.hub.subscribe(conn, topics))
            except RegistryUnavailable as exc:
                # Never a 200 for a subscription that would receive nothing: the new topics are taken back
                # (what was subscribed before stays), and the registry repairs whatever half-happened.
                self.hub.unsubscribe(conn, added)
                raise Refused(UNAVAILABLE, f"{exc}: nothing was subscribed, retry shortly") from None
        else:
            with contextlib.suppress(RegistryUnavailable):
                # The stream stops receiving them at once (the hub); a registration left behind is withdrawn
                # by the registry's repair.
                await self.registry.async_topics(self.hub.unsubscribe(conn, topics))
        return sorted(conn.topics)

    def receiving(self) -> bool:
        """Whether the receive loop runs (it restarts itself after errors; done only if it crashed or stopped)."""
        return bool(self._tasks) and not self._tasks[0].done()

    def _revoke(self, frame: bytes) -> None:
        """Close every local stream a revocation names (by member or by credential), saying why."""
        try:
            order = json.loads(frame)
            member, credential, reason = order.get("member"), order.get("credential"), str(order.get("reason", ""))
        except (ValueError, AttributeError):
            logger.warning("worker %s ignored a malformed revocation", self.channel)
            return
        # This process must stop accepting the credential at once too, not when its token cache expires.
        cache = tokens.get_cache()
        if member is not None:
            cache.forget(user_id=member)
        if credential:
            cache.forget_matching(lambda key: revocation.token_credential(key) == credential)
        closing = [
            conn
            for conn in self.hub.connections.values()
            if (member is not None and conn.member_id == member) or (credential and conn.credential == credential)
        ]
        final = sse.frame(json.dumps({"reason": reason}), event="revoked")
        for conn in closing:
            conn.close(final)
        self.stats["revoked_streams"] += len(closing)
        if closing:
            logger.info("worker %s closed %d streams: %s", self.channel, len(closing), reason)

    async def _alive(self, channel: str) -> bool:
        try:
            return await self.dispatcher.ais_member(revocation.CONTROL_GROUP, channel)
        except (RedisError, OSError) as exc:
            raise Refused(UNAVAILABLE, f"the real-time layer is unreachable ({exc}): retry shortly") from None

    def _hosted(self) -> dict[str, set[Connection]]:
        return self.hub.topics

    async def _serve_change(self, message: LayerMessage) -> list[str]:
        return await self._change_local(
            message["connection_id"], message["op"], list(message["topics"]), message.get("member_id")
        )

    # -- background loops -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.dispatcher.areceive(self.channel)
                kind = message.get("type")
                if kind in (EVENTS, EVENT):
                    self.stats["received_messages"] += 1
                    # A round's events for this worker, or one topic's (the in-memory layer's group_send).
                    pairs = message["events"] if kind == EVENTS else [(message["topic"], message["frames"])]
                    for topic, frames in pairs:
                        if topic == revocation.CONTROL_GROUP:
                            for frame in frames:
                                self._revoke(frame)
                            continue
                        self.stats["received_events"] += len(frames)
                        await self.outbox.put(topic, frames)
                elif kind == RPC:
                    self._spawn(self.rpc.aserve(message, self._serve_change))
                elif kind == REPLY:
                    self.rpc.answered(message)
                else:
                    logger.warning("worker %s ignored a message of type %r", self.channel, kind)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis may have restarted empty (every group gone): resync as soon as it answers again.
                self.registry.out_of_step = True
                logger.exception("realtime receive loop failed; retrying in %.1fs", _ERROR_BACKOFF_SECS)
                await asyncio.sleep(_ERROR_BACKOFF_SECS)

    async def _deliver(self, topic: str, frames: list[bytes]) -> None:
        # Several events for one topic (one round, or one flush interval) go out as one write per stream.
        chunk = frames[0] if len(frames) == 1 else b"".join(frames)
        if not await self.hub.fan_out(topic, chunk, frames=len(frames)):
            self.stats["stray_events"] += len(frames)

    async def _every(self, interval_secs: float, job: Callable[[], Awaitable[None]], *, quiet: bool = False) -> None:
        while True:
            await asyncio.sleep(interval_secs)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except RegistryUnavailable:
                # Logged once per failed call by the registry; retried at the next tick.
                if not quiet:
                    logger.warning("realtime job %s: the registry is unreachable", getattr(job, "__name__", job))
            except Exception:
                logger.exception("realtime background job %s failed", getattr(job, "__name__", job))

    async def _forever(self, job: Callable[[], Awaitable[None]]) -> None:
        # A plug-in loop (e.g. the presence sweeper) that returns or fails is restarted after a back-off.
        while True:
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("realtime background task %s failed", job.__name__)
            await asyncio.sleep(_ERROR_BACKOFF_SECS)

    async def _keepalive(self) -> None:
        await self.hub.write_all(sse.comment())

    async def _heartbeat(self) -> None:
        members = list(self.hub.members)
        if members:
            for handler in hooks.member_heartbeats:
                await handler(members)

    def _beat(self, members: list[int]) -> None:
        for handler in hooks.member_heartbeats:
            self._spawn(handler(members))

    def _bind(self, job: hooks.PeriodicJob) -> Callable[[], Awaitable[None]]:
        return lambda: job(self)

    @staticmethod
    def _task(coro: hooks.Coro, name: str | None = None) -> asyncio.Task[None]:
        # A fresh context: the worker is started from whichever request comes first, and a task inherits the
        # creator's context variables. From a Django view that includes asgiref's per-request executor for
        # thread-sensitive sync_to_async, which is shut down when the request ends; database_sync_to_async
        # in the worker's tasks (presence) would then fail with "CurrentThreadExecutor already quit".
        return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())

    def _spawn(self, coro: hooks.Coro) -> None:
        task = self._task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if task.cancelled() or isinstance(task.exception(), RegistryUnavailable):
            return  # A registry failure was logged where it happened and will be repaired.
        if task.exception() is not None:
            logger.error("realtime background task failed", exc_info=task.exception())

    def snapshot(self, now: float | None = None) -> dict[str, object]:
        """Counters for operators and tests."""
        return {
            "worker": self.channel,
            "time": time.time() if now is None else now,
            "connections": len(self.hub.connections),
            "topics": len(self.hub.topics),
            "registered_topics": len(self.registry.registered - self.registry.always),  # the control group aside
            "members": len(self.hub.members),
            "writers": dict(self.hub.writers),
            **self.stats,
            **self.rpc.stats,
            **self.registry.stats,
            "registry_out_of_step": self.registry.out_of_step,
            **self.hub.stats,
            **{f"outbox_{name}": value for name, value in self.outbox.stats.items()},
            "outbox_waiting": self.outbox.frames,
            "outbox_waiting_bytes": self.outbox.bytes,
            **{f"dispatch_{name}": value for name, value in self.dispatcher.stats.items()},
        }


_worker: Worker | None = None
_starting: asyncio.Lock | None = None


async def aget_worker() -> Worker:
    """This process's started Worker, created on first use (Daphne has no ASGI lifespan to start it)."""
    global _worker, _starting
    loop = asyncio.get_running_loop()
    if _worker is not None and _worker.loop is loop and not _worker.stopped:
        return _worker
    if _starting is None or _starting._loop not in (None, loop):  # type: ignore[attr-defined]
        _starting = asyncio.Lock()
    async with _starting:
        if _worker is None or _worker.loop is not loop or _worker.stopped:
            worker = Worker(
                get_dispatcher(),
                keepalive_secs=conf.get("KEEPALIVE_SECS"),
                lease_secs=conf.get("LEASE_SECS"),
                max_topics=conf.get("MAX_TOPICS_PER_CONNECTION"),
                rpc_timeout_secs=conf.get("RPC_TIMEOUT_SECS"),
                heartbeat_secs=conf.get("HEARTBEAT_SECS"),
                flush_secs=conf.get("FLUSH_MS") / 1000,
            )
            await worker.astart()
            servers.on_shutdown(worker.astop)
            _worker = worker
    return _worker


async def astop_worker() -> None:
    """Stop this process's Worker if one was started (the ASGI lifespan's shutdown); a later use starts anew."""
    global _worker
    worker = _worker
    if worker is not None and worker.loop is asyncio.get_running_loop():
        _worker = None
        await worker.astop()
