"""The frontend connection manager of one process: its hub, its worker channel, and its background loops.

One Worker per process (per event loop), started by the first stream. It receives events for its topics
on its worker channel and fans them out through the hub; it answers subscription requests for the
connections it holds, wherever they were sent; it keeps its topic leases, keep-alives and member
heartbeats going.
"""

import asyncio
import contextvars
import itertools
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from django.utils.module_loading import import_string

from realtime import conf, daphne, sse
from realtime.census import CENSUS_PREFIX, Census, get_store
from realtime.dispatcher import EVENT, EVENTS, REPLY, RPC, Dispatcher, get_dispatcher, is_worker_channel
from realtime.hub import Connection, Hub
from realtime.outbox import Outbox
from realtime.publishing import apublish
from realtime.topics import MAX_TOPIC_LENGTH, can_read

logger = logging.getLogger(__name__)

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
_ERROR_BACKOFF_SECS = 1.0


class SubscriptionError(Exception):
    """A refused subscription change: an HTTP status, a stable code and a message for the client."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


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
        heartbeat_handler: Callable[[list[int]], Awaitable[None]] | None = None,
        background_tasks: Iterable[Callable[[], Awaitable[None]]] = (),
        census: Census | None = None,
        flush_secs: float = 0.02,
    ) -> None:
        self.dispatcher = dispatcher
        self.hub = Hub()
        self.keepalive_secs = keepalive_secs
        self.lease_secs = lease_secs
        self.max_topics = max_topics
        self.rpc_timeout_secs = rpc_timeout_secs
        self.heartbeat_secs = heartbeat_secs
        self.heartbeat_handler = heartbeat_handler
        self.background_tasks = list(background_tasks)
        self.census = census
        self.outbox = Outbox(self._deliver, flush_secs=flush_secs)
        self.channel = ""
        self.registered: set[str] = set()
        self._topic_locks: dict[str, list[Any]] = {}  # topic -> [lock, users]
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._rpc_ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stats = {"received_events": 0, "received_messages": 0, "stray_events": 0, "rpc_served": 0, "rpc_sent": 0}

    # -- life cycle -------------------------------------------------------------------------------

    async def astart(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = await self.dispatcher.anew_worker_channel()
        self._tasks = [
            self._task(self._receive_loop(), name="realtime-receive"),
            self._task(self.outbox.run(), name="realtime-flush"),
            self._task(self._every(self.lease_secs / 3, self._refresh_leases), name="realtime-leases"),
            self._task(self._every(self.keepalive_secs, self._keepalive), name="realtime-keepalive"),
        ]
        if self.heartbeat_handler is not None:
            self._tasks.append(self._task(self._every(self.heartbeat_secs, self._heartbeat), name="realtime-heartbeat"))
        if self.census is not None and self.census.pattern is not None:
            self._tasks.append(self._task(self._every(self.census.interval_secs, self._count), name="realtime-census"))
        for job in self.background_tasks:
            self._tasks.append(self._task(self._forever(job), name=f"realtime-{job.__name__}"))
        logger.info("realtime worker %s started", self.channel)

    async def astop(self, *, timeout_secs: float = 5.0) -> None:
        """Cancel the loops and give up every registration at once, instead of leaving them to expire.

        Run on Daphne's shutdown (SIGTERM, SIGINT); a SIGKILLed worker relies on the leases instead.
        """
        for task in self._tasks:
            task.cancel()
        topics = list(self.registered)
        self.registered.clear()
        try:
            async with asyncio.timeout(timeout_secs):
                await asyncio.gather(*(self.dispatcher.aderegister(topic, self.channel) for topic in topics))
        except TimeoutError:
            logger.warning("worker %s left some registrations to expire with their lease", self.channel)
        logger.info("realtime worker %s stopped: %d registrations withdrawn", self.channel, len(topics))

    # -- connections ------------------------------------------------------------------------------

    def new_connection_id(self) -> str:
        """144 random bits, then this worker's channel so any worker can route a request for it."""
        return f"{secrets.token_urlsafe(18)}~{self.channel}"

    async def aattach(self, conn: Connection, topics: Iterable[str] = ()) -> None:
        """Add a stream and its first topics; returns once this worker is registered for all of them."""
        self.hub.add(conn)
        await self._sync_topics(self.hub.subscribe(conn, topics))
        if conn.member_id is not None and self.heartbeat_handler is not None:
            self._spawn(self.heartbeat_handler([conn.member_id]))

    def detach(self, conn: Connection) -> None:
        """Forget a closed stream. Sync, so it runs even in a cancelled task; deregistration follows."""
        conn.closed = True
        emptied = self.hub.remove(conn)
        if emptied:
            self._spawn(self._sync_topics(emptied))
        if conn.member_id is not None and self.heartbeat_handler is not None:
            # A last beat at the close: the member's offline window starts now, not at the previous beat, so a
            # reconnect anywhere within the whole window changes nothing.
            self._spawn(self.heartbeat_handler([conn.member_id]))

    async def achange(self, connection_id: str, op: str, topics: list[str], member_id: int | None) -> list[str]:
        """Subscribe or unsubscribe a connection held by any worker; returns its resulting topics.

        Raises SubscriptionError (404 unknown connection, 403 not its owner, 409 too many topics).
        """
        _, _, channel = connection_id.partition("~")
        if channel == self.channel:
            return await self._change_local(connection_id, op, topics, member_id)
        if not is_worker_channel(channel):
            raise SubscriptionError(404, "unknown_connection", "no open stream has this connection_id")
        return await self._change_remote(channel, connection_id, op, topics, member_id)

    async def _change_local(self, connection_id: str, op: str, topics: list[str], member_id: int | None) -> list[str]:
        conn = self.hub.get(connection_id)
        if conn is None or conn.closed:
            raise SubscriptionError(
                404,
                "unknown_connection",
                "no open stream has this connection_id: open /realtime/connect again",
            )
        if conn.member_id is not None and conn.member_id != member_id:
            raise SubscriptionError(403, "not_your_connection", "this stream belongs to another member")
        if op == SUBSCRIBE:
            forbidden = [topic for topic in topics if not can_read(topic, conn.member_id)]
            if forbidden:
                raise SubscriptionError(
                    403,
                    "forbidden_topic",
                    f"this stream may not read {forbidden[0]!r}: it is another member's",
                )
            if len(conn.topics | set(topics)) > self.max_topics:
                raise SubscriptionError(
                    409,
                    "too_many_topics",
                    f"a connection may hold at most {self.max_topics} topics: unsubscribe from some first",
                )
            await self._sync_topics(self.hub.subscribe(conn, topics))
        else:
            await self._sync_topics(self.hub.unsubscribe(conn, topics))
        return sorted(conn.topics)

    async def _change_remote(
        self, channel: str, connection_id: str, op: str, topics: list[str], member_id: int | None
    ) -> list[str]:
        rid = next(self._rpc_ids)
        reply: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = reply
        self.stats["rpc_sent"] += 1
        try:
            await self.dispatcher.asend(
                channel,
                {
                    "type": RPC,
                    "op": op,
                    "connection_id": connection_id,
                    "topics": topics,
                    "member_id": member_id,
                    "reply_to": self.channel,
                    "rid": rid,
                },
            )
            answer = await asyncio.wait_for(reply, self.rpc_timeout_secs)
        except TimeoutError:
            raise SubscriptionError(
                404, "unknown_connection", "the worker holding this connection did not answer: reconnect"
            ) from None
        finally:
            self._replies.pop(rid, None)
        if answer.get("error"):
            raise SubscriptionError(answer["status"], answer["code"], answer["error"])
        return answer["topics"]

    # -- registrations ----------------------------------------------------------------------------

    async def _sync_topics(self, topics: list[str]) -> None:
        if len(topics) == 1:
            await self._sync_topic(topics[0])
        elif topics:
            await asyncio.gather(*(self._sync_topic(topic) for topic in topics))

    async def _sync_topic(self, topic: str) -> None:
        """Make the registration of `topic` match whether the hub has local subscribers for it.

        Serialised per topic and decided when the lock is held, so a deregistration scheduled by a closing
        stream can never undo the registration a new subscriber needs, and a second subscriber returns
        only once the first one's registration is in place.
        """
        entry = self._topic_locks.get(topic)
        if entry is None:
            entry = self._topic_locks[topic] = [asyncio.Lock(), 0]
        entry[1] += 1
        try:
            async with entry[0]:
                wanted = self.hub.has_topic(topic)
                if wanted and topic not in self.registered:
                    await self.dispatcher.aregister(topic, self.channel)
                    self.registered.add(topic)
                elif not wanted and topic in self.registered:
                    self.registered.discard(topic)
                    await self.dispatcher.aderegister(topic, self.channel)
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._topic_locks[topic]

    async def _refresh_leases(self, batch: int = 5000) -> None:
        topics = list(self.registered)
        for start in range(0, len(topics), batch):
            await self.dispatcher.arefresh(topics[start : start + batch], self.channel)

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
                        self.stats["received_events"] += len(frames)
                        await self.outbox.put(topic, frames)
                elif kind == RPC:
                    self._spawn(self._serve_rpc(message))
                elif kind == REPLY:
                    future = self._replies.get(message.get("rid"))
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    logger.warning("worker %s ignored a message of type %r", self.channel, kind)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("realtime receive loop failed; retrying in %.1fs", _ERROR_BACKOFF_SECS)
                await asyncio.sleep(_ERROR_BACKOFF_SECS)

    async def _deliver(self, topic: str, frames: list[bytes]) -> None:
        # Several events for one topic (one round, or one flush interval) go out as one write per stream.
        chunk = frames[0] if len(frames) == 1 else b"".join(frames)
        if not await self.hub.fan_out(topic, chunk, frames=len(frames)):
            self.stats["stray_events"] += len(frames)

    async def _serve_rpc(self, message: dict[str, Any]) -> None:
        self.stats["rpc_served"] += 1
        reply: dict[str, Any] = {"type": REPLY, "rid": message["rid"]}
        try:
            reply["topics"] = await self._change_local(
                message["connection_id"], message["op"], list(message["topics"]), message.get("member_id")
            )
        except SubscriptionError as exc:
            reply.update(status=exc.status, code=exc.code, error=exc.message)
        await self.dispatcher.asend(message["reply_to"], reply)

    async def _every(self, interval_secs: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(interval_secs)
            try:
                await job()
            except asyncio.CancelledError:
                raise
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

    async def _count(self) -> None:
        changed = await self.census.areport(self.channel, self.hub.topics, time.time())
        for topic, total in changed.items():
            announce_on = CENSUS_PREFIX + topic
            if len(announce_on) <= MAX_TOPIC_LENGTH:
                await apublish(announce_on, "census.changed", {"topic": topic, "count": total})

    async def _keepalive(self) -> None:
        await self.hub.write_all(sse.comment())

    async def _heartbeat(self) -> None:
        members = list(self.hub.members)
        if members and self.heartbeat_handler is not None:
            await self.heartbeat_handler(members)

    @staticmethod
    def _task(coro: Any, name: str | None = None) -> asyncio.Task[Any]:
        # A fresh context: the worker is started from whichever request comes first, and a task inherits the
        # creator's context variables. From a Django view that includes asgiref's per-request executor for
        # thread-sensitive sync_to_async, which is shut down when the request ends; database_sync_to_async
        # in the worker's tasks (presence) would then fail with "CurrentThreadExecutor already quit".
        return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = self._task(coro)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("realtime background task failed", exc_info=task.exception())

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """Counters for operators and tests."""
        return {
            "worker": self.channel,
            "time": time.time() if now is None else now,
            "connections": len(self.hub.connections),
            "topics": len(self.hub.topics),
            "registered_topics": len(self.registered),
            "members": len(self.hub.members),
            **self.stats,
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
    if _worker is not None and _worker.loop is loop:
        return _worker
    if _starting is None or _starting._loop not in (None, loop):
        _starting = asyncio.Lock()
    async with _starting:
        if _worker is None or _worker.loop is not loop:
            handler_path = conf.get("MEMBER_HEARTBEAT_HANDLER")
            worker = Worker(
                get_dispatcher(),
                keepalive_secs=conf.get("KEEPALIVE_SECS"),
                lease_secs=conf.get("LEASE_SECS"),
                max_topics=conf.get("MAX_TOPICS_PER_CONNECTION"),
                rpc_timeout_secs=conf.get("RPC_TIMEOUT_SECS"),
                heartbeat_secs=conf.get("HEARTBEAT_SECS"),
                heartbeat_handler=import_string(handler_path) if handler_path else None,
                background_tasks=[import_string(path) for path in conf.get("BACKGROUND_TASKS")],
                census=Census(get_store(conf.get("REDIS_URL")), conf.get("CENSUS_TOPICS"), conf.get("CENSUS_SECS")),
                flush_secs=conf.get("FLUSH_MS") / 1000,
            )
            await worker.astart()
            daphne.on_shutdown(worker.astop)
            _worker = worker
    return _worker
