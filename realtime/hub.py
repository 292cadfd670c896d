"""Level 2 of the fan-out: this process's map topic -> connections, and the write path to each stream."""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

_END_OF_STREAM = {"type": "http.response.body", "body": b"", "more_body": False}


def body(chunk: bytes) -> dict[str, Any]:
    """An ASGI body message."""
    return {"type": "http.response.body", "body": chunk, "more_body": True}


class Payload:
    """One chunk on its way to many streams, in the two shapes a stream may take it; each built once."""

    __slots__ = ("_framed", "_message", "chunk", "frames")

    def __init__(self, chunk: bytes, frames: int = 1) -> None:
        self.chunk = chunk
        self.frames = frames
        self._message: dict[str, Any] | None = None
        self._framed: bytes | None = None

    @property
    def message(self) -> dict[str, Any]:
        if self._message is None:
            self._message = body(self.chunk)
        return self._message

    @property
    def framed(self) -> bytes:
        """The chunk in HTTP/1.1 chunked transfer encoding, for direct socket writes."""
        if self._framed is None:
            self._framed = b"%x\r\n%b\r\n" % (len(self.chunk), self.chunk)
        return self._framed


# How long a stream reset for falling behind may take to read its last frames before its socket is dropped.
RESET_GRACE_SECS = 5.0


class DirectWrite(Protocol):
    def write(self, framed: bytes) -> bool: ...

    def abort_later(self, delay_secs: float) -> None: ...


class Connection:
    """One open SSE stream: who owns it, what it reads, and its bounded backlog.

    Writes go out at once: straight to the socket where the server allows it (realtime.daphne), else as
    ASGI sends (Daphne never blocks one). When the server reports that the socket stopped draining
    (`pause`), payloads wait in `pending`, at most MAX_PENDING_FRAMES events in all; past that the stream is closed with
    a `reset` frame so the client reconnects and refetches, instead of letting one stalled reader grow the
    worker's memory.
    """

    __slots__ = (
        "closed",
        "direct",
        "id",
        "max_pending",
        "member_id",
        "overflowed",
        "paused",
        "pending",
        "pending_frames",
        "send",
        "topics",
    )

    def __init__(self, connection_id: str, member_id: int | None, send: Send, *, max_pending: int) -> None:
        self.id = connection_id
        self.member_id = member_id
        self.send = send
        self.direct: DirectWrite | None = None
        self.topics: set[str] = set()
        self.pending: deque[Payload] | None = None
        self.pending_frames = 0
        self.paused = False
        self.closed = False
        self.overflowed = False
        self.max_pending = max_pending

    async def write(self, payload: Payload) -> bool:
        """Write or queue one payload; False if the stream is closed, or was just closed for overflow."""
        if self.closed:
            return False
        if self.paused:
            if self.pending is None:
                self.pending = deque()
            if self.pending_frames + payload.frames > self.max_pending:
                await self.close(reset=True)
                return False
            self.pending.append(payload)
            self.pending_frames += payload.frames
            return True
        return await self._put(payload)

    async def _put(self, payload: Payload) -> bool:
        if self.direct is not None:
            return self.direct.write(payload.framed)
        await self.send(payload.message)
        return True

    def pause(self) -> None:
        self.paused = True

    async def resume(self) -> None:
        self.paused = False
        while self.pending and not self.paused and not self.closed:
            payload = self.pending.popleft()
            self.pending_frames -= payload.frames
            await self._put(payload)
        if not self.pending:
            self.pending = None

    async def close(self, *, reset: bool = False) -> None:
        """End the stream from the server side; the server then reports the disconnect to the stream's task."""
        if self.closed:
            return
        self.closed = True
        self.pending = None
        self.pending_frames = 0
        if reset:
            self.overflowed = True
            await self.send(body(b'event: reset\ndata: {"reason":"slow_consumer"}\n\n'))
        await self.send(_END_OF_STREAM)
        if reset and self.direct is not None:
            self.direct.abort_later(RESET_GRACE_SECS)


class Hub:
    """This process's connections and subscriptions. Owns no I/O but the writes to its streams.

    subscribe/unsubscribe/remove return the topics that gained their first or lost their last local
    subscriber, so the caller can register or deregister this worker for them.
    """

    def __init__(self) -> None:
        self.connections: dict[str, Connection] = {}
        self.topics: dict[str, set[Connection]] = {}
        self.members: dict[int, int] = {}
        self.stats = {"delivered": 0, "overflow_closed": 0, "events": 0}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        if conn.member_id is not None:
            self.members[conn.member_id] = self.members.get(conn.member_id, 0) + 1

    def get(self, connection_id: str) -> Connection | None:
        return self.connections.get(connection_id)

    def subscribe(self, conn: Connection, topics: Iterable[str]) -> list[str]:
        first = []
        for topic in topics:
            if topic in conn.topics:
                continue
            conn.topics.add(topic)
            subscribers = self.topics.get(topic)
            if subscribers is None:
                self.topics[topic] = subscribers = set()
                first.append(topic)
            subscribers.add(conn)
        return first

    def unsubscribe(self, conn: Connection, topics: Iterable[str]) -> list[str]:
        last = []
        for topic in topics:
            if topic not in conn.topics:
                continue
            conn.topics.discard(topic)
            subscribers = self.topics.get(topic)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self.topics[topic]
                    last.append(topic)
        return last

    def remove(self, conn: Connection) -> list[str]:
        if self.connections.pop(conn.id, None) is None:
            return []
        if conn.member_id is not None:
            remaining = self.members.get(conn.member_id, 1) - 1
            if remaining > 0:
                self.members[conn.member_id] = remaining
            else:
                self.members.pop(conn.member_id, None)
        return self.unsubscribe(conn, list(conn.topics))

    def has_topic(self, topic: str) -> bool:
        return topic in self.topics

    async def fan_out(self, topic: str, chunk: bytes, *, frames: int = 1, yield_every: int = 1000) -> int:
        """Write one chunk to every local subscriber of `topic`; returns how many streams took it.

        Yields to the event loop every `yield_every` writes, so requests on this worker do not wait for a
        whole fan-out to 10,000 streams; the receive loop awaits it, so events keep their order.
        """
        subscribers = self.topics.get(topic)
        if not subscribers:
            return 0
        payload = Payload(chunk, frames)
        delivered = 0
        # A copy: a write can close a stream, whose cleanup edits the set.
        for index, conn in enumerate(tuple(subscribers)):
            if conn.closed:
                continue
            try:
                if await conn.write(payload):
                    delivered += 1
                elif conn.overflowed:
                    self.stats["overflow_closed"] += 1
            except Exception:
                # One broken stream must not stop delivery to the others.
                logger.exception("write to connection %s failed", conn.id)
            if index % yield_every == yield_every - 1:
                await asyncio.sleep(0)
        self.stats["events"] += 1
        self.stats["delivered"] += delivered
        return delivered

    async def write_all(self, chunk: bytes, *, yield_every: int = 1000) -> None:
        """Write `chunk` (a keep-alive) to every stream that is not paused, yielding between batches."""
        payload = Payload(chunk)
        for index, conn in enumerate(tuple(self.connections.values())):
            if not conn.paused:
                try:
                    await conn.write(payload)
                except Exception:
                    logger.exception("keep-alive write to connection %s failed", conn.id)
            if index % yield_every == yield_every - 1:
                await asyncio.sleep(0)
