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
import heapq
import json
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.exceptions import RedisError

from realtime import caps, conf, history, hooks, metrics, policies, revocation, servers, sse, tokens
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
from realtime.history import Position
from realtime.hub import CLOSING_FRAME, Connection, Hub, Payload, after_floor
from realtime.outbox import Outbox
from realtime.registry import Registry, RegistryUnavailable, renewal_steps
from realtime.rpc import (
    FORBIDDEN_TOPIC,
    NOT_YOUR_CONNECTION,
    TOO_MANY_TOPICS,
    UNAVAILABLE,
    UNKNOWN_CONNECTION,
    Refused,
    Rpc,
)
from realtime.sequencer import Release, Sequencer
from realtime.topics import ForbiddenTopic, TooManyTopics, check_topic_count

logger = logging.getLogger(__name__)

SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"
COUNT = "count"
_ERROR_BACKOFF_SECS = 1.0
# A keep-alive round about this often, each for a slice of the streams: a pass over 17,000 streams at once
# took a worker's loop away from deliveries for a third of a second (docs/benchmarks.md A.15).
KEEPALIVE_STEP_SECS = 1.0
# While the registry is out of step with the hub (a Redis fault), it is resynced this often.
REPAIR_SECS = 1.0
# Topics per history read when the worker checks every hosted topic after a fault.
SWEEP_BATCH = 500
# Topics per worker listed in its snapshot, by local stream count (the cluster's busiest come from these).
BUSIEST_TOPICS = 20
# Frames per write when a resumed stream is sent what it missed.
REPLAY_CHUNK = 100
# Topic revocations remembered for the read checks that were under way when they came (Worker._acheck_read);
# a check repeated this many times, each overtaken by a revocation, is refused.
REVOCATIONS_KEPT = 1000
READ_CHECK_TRIES = 3


def gap_frame(topics: list[str]) -> bytes:
    """The frame that tells a client it missed events on these topics that nobody can give it: refetch them."""
    return sse.frame(json.dumps({"topics": topics}, separators=(",", ":")), event="gap")


class AccessChanging(Exception):
    """A read check overtaken by revocations READ_CHECK_TRIES times in a row: try again shortly (503)."""


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
        reorder_secs: float = 0.1,
    ) -> None:
        self.dispatcher = dispatcher
        self.keepalive_secs = keepalive_secs
        # A keep-alive round for one slice of the streams about every KEEPALIVE_STEP_SECS (realtime.hub).
        self.keepalive_slices = max(1, round(keepalive_secs / KEEPALIVE_STEP_SECS))
        self.hub = Hub(keepalive_slices=self.keepalive_slices)
        self.lease_secs = lease_secs
        self.max_topics = max_topics
        self.rpc_timeout_secs = rpc_timeout_secs
        self.heartbeat_secs = heartbeat_secs
        self.outbox = Outbox(self._deliver, flush_secs=flush_secs)
        self.sequencer = Sequencer()
        self.reorder_secs = reorder_secs
        self._repairs: set[str] = set()  # topics whose hole a task is repairing
        self._sweep_due = False  # a fault may have cost events: check every hosted topic against its history
        # Topic revocations as they arrive: (their count so far, member, topics), the last REVOCATIONS_KEPT.
        # A subscription's read check awaits (a rule's database query): one that began before a revocation of
        # the same member's topic arrived may have been answered from the state before the removal.
        self._topic_revocations: deque[tuple[int, object, frozenset[str]]] = deque(maxlen=REVOCATIONS_KEPT)
        self._topic_revocation_count = 0
        self.channel = ""
        self.registry = Registry(dispatcher, "", self._hosted)
        self.rpc = Rpc(dispatcher, "", timeout_secs=rpc_timeout_secs)
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self.stopped = False
        self.stats = {
            "received_events": 0,
            "received_messages": 0,
            "stray_events": 0,
            "revoked_streams": 0,
            "revoked_topic_streams": 0,
            "read_checks_repeated": 0,
            "resumed_topics": 0,
            "resume_gaps": 0,
            "replayed_events": 0,
            "history_failures": 0,
            "sweeps": 0,
        }

    # -- life cycle -------------------------------------------------------------------------------

    async def astart(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.channel = await self.dispatcher.anew_worker_channel()
        self.registry = Registry(
            self.dispatcher,
            self.channel,
            self._hosted,
            always=[revocation.CONTROL_GROUP],
            positioned=self.sequencer.start,
            renew_steps=renewal_steps(self.lease_secs),
        )
        self.rpc = Rpc(self.dispatcher, self.channel, timeout_secs=self.rpc_timeout_secs)
        self._tasks = [
            self._task(self._receive_loop(), name="realtime-receive"),
            self._task(self.outbox.run(), name="realtime-flush"),
            self._task(self._renew_leases(), name="realtime-leases"),
            self._task(self._every(REPAIR_SECS, self._repair, quiet=True), name="realtime-repair"),
            self._task(self._keepalives(), name="realtime-keepalive"),
            self._task(caps.abeat_forever(self.channel), name="realtime-alive"),
            self._task(self._every(metrics.SNAPSHOT_SECS, self._publish_snapshot), name="realtime-snapshot"),
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
        try:
            await self.registry.async_topics([revocation.CONTROL_GROUP])
        except BaseException:
            # Not started (Redis away): no loop of this attempt may live on beside the next attempt's.
            for task in self._tasks:
                task.cancel()
            self._tasks = []
            raise
        self.started_at = time.time()
        with contextlib.suppress(RedisError, OSError):
            await self._publish_snapshot()  # In the cluster's directory at once; retried every SNAPSHOT_SECS.
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
            conn.close(CLOSING_FRAME)
        for task in self._tasks:
            task.cancel()
        withdrawn = await self.registry.awithdraw(timeout_secs=timeout_secs)
        logger.info("realtime worker %s stopped: %d registrations withdrawn", self.channel, withdrawn)

    # -- connections ------------------------------------------------------------------------------

    def new_connection_id(self) -> str:
        """144 random bits, then this worker's channel so any worker can route a request for it."""
        return f"{secrets.token_urlsafe(18)}~{self.channel}"

    async def aattach(
        self,
        conn: Connection,
        topics: Iterable[str] = (),
        since: dict[str, Position] | None = None,
        lost: Iterable[str] = (),
        *,
        checked_at: int | None = None,
    ) -> None:
        """Add a stream and its first topics; returns once this worker is registered for all of them.

        Topics in `since` (to resume) and `lost` (that cannot be) are held for `aresume`: their live events wait
        until what was missed, or a `gap` frame, is written. `checked_at`: the `revocation_mark()` taken before
        the topics' read check; a topic revocation for this member since then has them checked again
        (ForbiddenTopic, AccessChanging), so a removal during the stream's opening is not outrun by it.
        """
        topics = list(topics)
        if checked_at is not None and topics:
            await self._acheck_read(topics, conn.member_id, checked_at)
        self.hub.add(conn)
        held = [topic for topic in [*(since or {}), *lost] if topic in topics]
        if held:
            conn.catching_up = {topic: ([], []) for topic in held}
        await self.registry.async_topics(self.hub.subscribe(conn, topics))
        if conn.member_id is not None:
            self._beat([conn.member_id])

    async def aresume(
        self, conn: Connection, since: dict[str, Position], lost: Iterable[str] = ()
    ) -> tuple[list[str], list[str]]:
        """Write what the stream missed on each held topic since its position, then the live events that
        waited meanwhile, each once and in order; a topic the history cannot resume, or `lost`, gets a `gap`.

        Returns (recovered topics, gap topics).
        """
        waiting = conn.catching_up or {}
        topics = [topic for topic in since if topic in waiting]
        lost = [topic for topic in lost if topic in waiting and topic not in since]
        if not topics and not lost:
            return [], []
        try:
            replays = await self.dispatcher.aread_history({topic: since[topic] for topic in topics}) if topics else {}
        except (RedisError, OSError) as exc:
            # No history to read: the client is told which topics to refetch, never left with a silent hole.
            self.stats["history_failures"] += 1
            logger.warning("worker %s could not read the history to resume a stream: %s", self.channel, exc)
            replays = {}
        # A topic taken from the stream meanwhile (a revocation) is no longer the stream's to resume.
        topics = [topic for topic in topics if topic in waiting]
        lost = [topic for topic in lost if topic in waiting]
        recovered = [topic for topic in topics if topic in replays and replays[topic].recovered]
        gaps = [topic for topic in topics if topic not in recovered] + lost
        out: list[bytes] = [gap_frame(gaps)] if gaps else []
        replayed = 0
        floors = conn.floors or {}
        for topic in topics + lost:
            frames, offsets = waiting.pop(topic)
            replay = replays.get(topic)
            if replay is None or not replay.recovered:
                out.extend(frames)
                continue
            out.extend(replay.frames)
            replayed += len(replay.frames)
            # Live events that are also in the history arrived while it was read: sent once, from the history.
            out.extend(after_floor(frames, offsets, replay.head.offset))
            # The history can hold events this worker has not received yet (a round reaches the history before
            # its workers): when they come, this stream skips them.
            last = max((offset for offset in offsets if offset), default=0)
            if replay.head.offset > last and 0 not in offsets:
                floors[topic] = replay.head.offset
        conn.catching_up = waiting or None
        conn.floors = floors or None
        self.stats["resumed_topics"] += len(recovered)
        self.stats["resume_gaps"] += len(gaps)
        self.stats["replayed_events"] += replayed
        for start in range(0, len(out), REPLAY_CHUNK):
            part = out[start : start + REPLAY_CHUNK]
            if not conn.write(Payload(b"".join(part), len(part))):
                break  # Closed, or reset for falling behind: it reconnects and resumes again.
        return recovered, gaps

    def detach(self, conn: Connection) -> None:
        """Forget a closed stream (once). Sync, so it runs even in a cancelled task; deregistration follows."""
        conn.closed = True
        if self.hub.get(conn.id) is not conn:
            return
        emptied = self.hub.remove(conn)
        if emptied:
            self._forget(emptied)
            self.spawn(self.registry.async_topics(emptied))
        if conn.member_id is not None:
            # A last beat at the close: the member's offline window starts now, not at the previous beat, so a
            # reconnect anywhere within the whole window changes nothing.
            self._beat([conn.member_id])

    async def achange(
        self,
        connection_id: str,
        op: str,
        topics: list[str],
        member_id: int | None,
        since: dict[str, Position] | None = None,
    ) -> dict[str, Any]:
        """Subscribe or unsubscribe a connection held by any worker.

        Returns {"topics": its resulting topics, "positions": where each newly subscribed topic stands (what
        to send back in `since` after a reconnect), "recovered": topics resumed from `since`, "gaps": topics
        of `since` that could not be (the stream got a `gap` frame for them)}. Raises Refused
        (unknown_connection, not_your_connection, forbidden_topic, too_many_topics, realtime_unavailable).
        """
        since = since or {}
        _, _, channel = connection_id.partition("~")
        if channel == self.channel:
            return await self._change_local(connection_id, op, topics, member_id, since)
        # A worker that is not in the control group is not alive (or never was): refused at once, without a
        # message to a channel nobody reads (it held the request for the RPC timeout and left a Redis key).
        if not is_worker_channel(channel) or not await self._alive(channel):
            raise Refused(UNKNOWN_CONNECTION, "no open stream has this connection_id: open /realtime/connect again")
        request = {
            "op": op,
            "connection_id": connection_id,
            "topics": topics,
            "member_id": member_id,
            "since": {topic: str(position) for topic, position in since.items()},
        }
        result: dict[str, Any] = await self.rpc.acall(channel, request)
        return result

    async def _change_local(
        self, connection_id: str, op: str, topics: list[str], member_id: int | None, since: dict[str, Position]
    ) -> dict[str, Any]:
        conn = self.hub.get(connection_id)
        if conn is None or conn.closed:
            raise Refused(UNKNOWN_CONNECTION, "no open stream has this connection_id: open /realtime/connect again")
        if conn.member_id is not None and conn.member_id != member_id:
            raise Refused(NOT_YOUR_CONNECTION, "this stream belongs to another member")
        if op == SUBSCRIBE:
            try:
                await self._acheck_read(topics, conn.member_id)
                check_topic_count(len(conn.topics | set(topics)), self.max_topics)
            except ForbiddenTopic as exc:
                raise Refused(FORBIDDEN_TOPIC, str(exc)) from None
            except AccessChanging as exc:
                raise Refused(UNAVAILABLE, str(exc)) from None
            except TooManyTopics as exc:
                raise Refused(TOO_MANY_TOPICS, str(exc)) from None
            if conn.closed or self.hub.get(conn.id) is not conn:
                # Ended while it was checked: subscribing it now would host topics for nobody.
                raise Refused(UNKNOWN_CONNECTION, "the stream ended: open /realtime/connect again")
            added = [topic for topic in topics if topic not in conn.topics]
            # Only new topics resume: one already subscribed is receiving its events live.
            resuming = {topic: since[topic] for topic in added if topic in since}
            if resuming:
                conn.catching_up = {**(conn.catching_up or {}), **{topic: ([], []) for topic in resuming}}
            try:
                await self.registry.async_topics(self.hub.subscribe(conn, topics))
            except RegistryUnavailable as exc:
                # Never a 200 for a subscription that would receive nothing: the new topics are taken back
                # (what was subscribed before stays), and the registry repairs whatever half-happened.
                self._forget(self.hub.unsubscribe(conn, added))
                if conn.catching_up is not None:
                    for topic in resuming:
                        conn.catching_up.pop(topic, None)
                    conn.catching_up = conn.catching_up or None
                raise Refused(UNAVAILABLE, f"{exc}: nothing was subscribed, retry shortly") from None
            recovered, gaps = await self.aresume(conn, resuming)
            return {
                "topics": sorted(conn.topics),
                "positions": self.positions(topic for topic in added if topic not in resuming),
                "recovered": recovered,
                "gaps": gaps,
            }
        emptied = self.hub.unsubscribe(conn, topics)
        self._forget(emptied)
        with contextlib.suppress(RegistryUnavailable):
            # The stream stops receiving them at once (the hub); a registration left behind is withdrawn
            # by the registry's repair.
            await self.registry.async_topics(emptied)
        return {"topics": sorted(conn.topics), "positions": {}, "recovered": [], "gaps": []}

    def revocation_mark(self) -> int:
        """Where this worker's topic revocations stand: pass it to `aattach` for a read check made after it."""
        return self._topic_revocation_count

    async def _acheck_read(self, topics: list[str], member_id: int | None, mark: int | None = None) -> None:
        """The read check, done again if a revocation of these topics for this member arrived meanwhile (or since
        `mark`, for a check already made); raises ForbiddenTopic, or AccessChanging after READ_CHECK_TRIES. What
        follows it (the hub's subscribe) must run without an await in between: a revocation that arrives after
        this returns finds the topics subscribed and takes them."""
        wanted = frozenset(topics)
        if mark is not None and not self._revoked_since(mark, member_id, wanted):
            return
        for _ in range(READ_CHECK_TRIES):
            before = self._topic_revocation_count
            await policies.acheck_read(topics, member_id, conf.get("OPEN_NAMESPACES"))
            if not self._revoked_since(before, member_id, wanted):
                return
            self.stats["read_checks_repeated"] += 1
        logger.warning(
            "worker %s: member %s's read check of %s overtaken by revocations; refused", self.channel, member_id, topics
        )
        raise AccessChanging("this stream's access to these topics kept changing while it was checked: retry")

    def _revoked_since(self, count: int, member_id: int | None, topics: frozenset[str]) -> bool:
        if self._topic_revocation_count == count:
            return False
        kept = self._topic_revocations
        if kept[0][0] > count + 1:
            return True  # Some that arrived meanwhile are no longer kept: assume the worst.
        return any(n > count and member == member_id and not topics.isdisjoint(taken) for n, member, taken in kept)

    def receiving(self) -> bool:
        """Whether the receive loop runs (it restarts itself after errors; done only if it crashed or stopped)."""
        return bool(self._tasks) and not self._tasks[0].done()

    def _revoke(self, frame: bytes) -> None:
        """Close every local stream a revocation names (by member or by credential), saying why; or, when it
        names topics, take those topics from the member's streams."""
        try:
            order = json.loads(frame)
            member, credential, reason = order.get("member"), order.get("credential"), str(order.get("reason", ""))
            topics = order.get("topics")
        except (ValueError, AttributeError):
            logger.warning("worker %s ignored a malformed revocation", self.channel)
            return
        if isinstance(topics, list):
            self._revoke_topics(member, [str(topic) for topic in topics], reason)
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

    def _revoke_topics(self, member: object, topics: list[str], reason: str) -> None:
        """Take `topics` from every local stream of `member`; each is told which, and why."""
        self._topic_revocation_count += 1
        self._topic_revocations.append((self._topic_revocation_count, member, frozenset(topics)))
        emptied: list[str] = []
        told = 0
        for conn in [conn for conn in self.hub.connections.values() if conn.member_id == member]:
            taken = sorted(conn.topics.intersection(topics))
            if not taken:
                continue
            emptied += self.hub.unsubscribe(conn, taken)
            if conn.catching_up is not None:
                for topic in taken:
                    conn.catching_up.pop(topic, None)
            notice = {"topics": taken, "reason": reason}
            conn.write(Payload(sse.frame(json.dumps(notice, separators=(",", ":")), event="unsubscribed")))
            told += 1
        if emptied:
            self._forget(emptied)
            self.spawn(self.registry.async_topics(emptied))
        self.stats["revoked_topic_streams"] += told
        if told:
            logger.info("worker %s took %s from %d streams: %s", self.channel, topics, told, reason)

    async def _alive(self, channel: str) -> bool:
        try:
            return await self.dispatcher.ais_member(revocation.CONTROL_GROUP, channel)
        except (RedisError, OSError) as exc:
            raise Refused(UNAVAILABLE, f"the real-time layer is unreachable ({exc}): retry shortly") from None

    def _hosted(self) -> dict[str, set[Connection]]:
        return self.hub.topics

    async def acount(self, channel: str, topics: list[str]) -> dict[str, int]:
        """How many streams the worker on `channel` (this one or another) holds on each topic."""
        if channel == self.channel:
            return self._count(topics)
        result: dict[str, int] = await self.rpc.acall(channel, {"op": COUNT, "topics": topics})
        return result

    def _count(self, topics: list[str]) -> dict[str, int]:
        return {topic: len(self.hub.topics.get(topic, ())) for topic in topics}

    async def _serve_change(self, message: LayerMessage) -> dict[str, Any]:
        logger.debug(
            "worker %s: %s %s for %s, asked by %s",
            self.channel,
            message.get("op"),
            message.get("topics"),
            message.get("connection_id", "-"),
            message.get("reply_to"),
        )
        if message.get("op") == COUNT:
            return self._count(list(message["topics"]))
        # Positions were checked by the worker that took the request; a malformed one is a bug there.
        since = {topic: history.parse_position(value) for topic, value in (message.get("since") or {}).items()}
        return await self._change_local(
            message["connection_id"], message["op"], list(message["topics"]), message.get("member_id"), since
        )

    def positions(self, topics: Iterable[str]) -> dict[str, str]:
        """Where each topic stands for this worker's streams, as a client sends it back in `since` to resume.

        Topics without history (or not yet positioned) are left out: they cannot be resumed.
        """
        known = self.sequencer.positions
        return {topic: str(known[topic]) for topic in topics if topic in known}

    def _forget(self, topics: list[str]) -> None:
        """Topics no longer hosted here: their order is no longer this worker's to keep."""
        for topic in topics:
            if not self.hub.has_topic(topic):
                self.sequencer.forget(topic)

    # -- background loops -------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            try:
                message = await self.dispatcher.areceive(self.channel)
                kind = message.get("type")
                if kind in (EVENTS, EVENT):
                    self.stats["received_messages"] += 1
                    # A round's events for this worker, or one topic's (the in-memory layer's group_send).
                    rows = (
                        message["events"]
                        if kind == EVENTS
                        else [(message["topic"], message["epoch"], message["first"], message["frames"])]
                    )
                    for topic, epoch, first, frames in rows:
                        if topic == revocation.CONTROL_GROUP:
                            for frame in frames:
                                self._revoke(frame)
                            continue
                        self.stats["received_events"] += len(frames)
                        await self._release(topic, self.sequencer.admit(topic, epoch, first, frames))
                elif kind == RPC:
                    self.spawn(self.rpc.aserve(message, self._serve_change))
                elif kind == REPLY:
                    self.rpc.answered(message)
                else:
                    logger.warning("worker %s ignored a message of type %r", self.channel, kind)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis may have restarted empty (every group gone): resync as soon as it answers again, then
                # check every topic against its history (messages may have been lost with the connection).
                self.registry.out_of_step = True
                self._sweep_due = True
                logger.exception("realtime receive loop failed; retrying in %.1fs", _ERROR_BACKOFF_SECS)
                await asyncio.sleep(_ERROR_BACKOFF_SECS)

    async def _release(self, topic: str, release: Release) -> None:
        """Queue what the sequencer lets through (a gap frame first), and repair a hole if one opened."""
        if release.gap:
            logger.warning("worker %s: events of %s are lost; its streams are told (gap)", self.channel, topic)
            await self.outbox.put(topic, [gap_frame([topic])])
        if release.frames:
            await self.outbox.put(topic, release.frames, release.offsets)
        if release.hole and topic not in self._repairs:
            self._repairs.add(topic)
            self.spawn(self._repair_hole(topic))

    async def _repair_hole(self, topic: str) -> None:
        """A topic's events came with a hole: wait briefly for the missing ones, then read them from history."""
        try:
            await asyncio.sleep(self.reorder_secs)
            while self.sequencer.has_hole(topic):
                asked = self.sequencer.positions[topic]
                try:
                    replay = (await self.dispatcher.aread_history({topic: asked}))[topic]
                except (RedisError, OSError) as exc:
                    self.stats["history_failures"] += 1
                    logger.warning("worker %s: history of %s unreadable (%s); retrying", self.channel, topic, exc)
                    await asyncio.sleep(_ERROR_BACKOFF_SECS)
                    continue
                await self._release(topic, self.sequencer.fill(topic, asked, replay))
        finally:
            self._repairs.discard(topic)

    async def _repair(self) -> None:
        """Every second: resync the registry if a fault put it out of step, then check every hosted topic."""
        await self.registry.acheck_shards()
        if self.registry.out_of_step:
            self._sweep_due = True
            await self.registry.arepair()
        if self._sweep_due:
            self._sweep_due = False
            try:
                await self._sweep()
            except BaseException:
                self._sweep_due = True
                raise

    async def _renew_leases(self) -> None:
        """Forever: one step of the registry's lease renewal every `lease_secs / 3 / renew_steps` seconds."""
        step_secs = self.lease_secs / 3 / self.registry.renew_steps
        # At a random phase: workers started together would otherwise all renew in the same instant.
        await asyncio.sleep(random.uniform(0, step_secs))
        # Quiet: a failed renewal is logged by the registry, and the repair task takes over until it is fixed.
        await self._every(step_secs, self.registry.arenew, quiet=True)

    async def _sweep(self) -> None:
        """After a fault: deliver what each hosted topic's history has beyond this worker's position (events
        lost on the way), or a gap where the history cannot say (Redis restarted empty)."""
        self.stats["sweeps"] += 1
        topics = list(self.sequencer.positions)
        for start in range(0, len(topics), SWEEP_BATCH):
            asked = {
                topic: self.sequencer.positions[topic]
                for topic in topics[start : start + SWEEP_BATCH]
                if topic in self.sequencer.positions
            }
            replays = await self.dispatcher.aread_history(asked)
            for topic, replay in replays.items():
                await self._release(topic, self.sequencer.fill(topic, asked[topic], replay))

    async def _deliver(self, topic: str, frames: list[bytes], offsets: list[int]) -> None:
        # Several events for one topic (one round, or one flush interval) go out as one write per stream.
        if not await self.hub.fan_out(topic, frames, offsets):
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

    async def _keepalives(self) -> None:
        """Forever: a keep-alive round for the next slice of the streams, each stream's every `keepalive_secs`."""
        step_secs = self.keepalive_secs / self.keepalive_slices
        # At a random phase, as the lease renewal: workers started together would otherwise write at once.
        await asyncio.sleep(random.uniform(0, step_secs))
        await self._every(step_secs, self._keepalive)

    async def _keepalive(self) -> None:
        await self.hub.write_all(sse.comment())

    async def _heartbeat(self) -> None:
        members = list(self.hub.members)
        if members:
            for handler in hooks.member_heartbeats:
                await handler(members)

    def _beat(self, members: list[int]) -> None:
        for handler in hooks.member_heartbeats:
            self.spawn(handler(members))

    def _bind(self, job: hooks.PeriodicJob) -> Callable[[], Awaitable[None]]:
        return lambda: job(self)

    @staticmethod
    def _task(coro: hooks.Coro, name: str | None = None) -> asyncio.Task[None]:
        # A fresh context: the worker is started from whichever request comes first, and a task inherits the
        # creator's context variables. From a Django view that includes asgiref's per-request executor for
        # thread-sensitive sync_to_async, which is shut down when the request ends; database_sync_to_async
        # in the worker's tasks (presence) would then fail with "CurrentThreadExecutor already quit".
        return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())

    def spawn(self, coro: hooks.Coro) -> None:
        """Run `coro` in the background on this worker's loop; a failure is logged, never lost."""
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
        """Counters for operators and tests (`/realtime/stats`, `/metrics`, the admin's routing view)."""
        hosted = self.hub.topics
        busiest = heapq.nlargest(BUSIEST_TOPICS, hosted.items(), key=lambda item: len(item[1]))
        return {
            "worker": self.channel,
            "time": time.time() if now is None else now,
            "started_at": self.started_at,
            "connections": len(self.hub.connections),
            "topics": len(hosted),
            "subscriptions": sum(len(streams) for streams in hosted.values()),
            "busiest_topics": [[topic, len(streams)] for topic, streams in busiest],
            "registered_topics": len(self.registry.registered - self.registry.always),  # the control group aside
            "members": len(self.hub.members),
            "writers": dict(self.hub.writers),
            **self.stats,
            **self.rpc.stats,
            **self.registry.stats,
            **self.sequencer.stats,
            "registry_out_of_step": self.registry.out_of_step,
            **self.hub.stats,
            **{f"outbox_{name}": value for name, value in self.outbox.stats.items()},
            "outbox_waiting": self.outbox.frames,
            "outbox_waiting_bytes": self.outbox.bytes,
            **{f"dispatch_{name}": value for name, value in self.dispatcher.stats.items()},
            **{
                f"{prefix}_{name}": value
                for prefix, figures in hooks.stats_providers.items()
                for name, value in figures().items()
            },
            "histograms": {
                "publish_seconds": self.dispatcher.publish_seconds.as_dict(),
                "rpc_seconds": self.rpc.seconds.as_dict(),
            },
        }

    async def _publish_snapshot(self) -> None:
        await metrics.directory.apublish(self.snapshot())


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
                reorder_secs=conf.get("REORDER_MS") / 1000,
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
