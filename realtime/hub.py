"""Level 2 of the fan-out: this process's map topic -> connections, and the write path to each stream."""

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]

_END_OF_STREAM = {"type": "http.response.body", "body": b"", "more_body": False}


def body(chunk: bytes) -> dict[str, Any]:
    """An ASGI body message; built once per frame and shared by every connection it is written to."""
    return {"type": "http.response.body", "body": chunk, "more_body": True}


class Connection:
    """One open SSE stream: who owns it, what it reads, and its bounded backlog.

    Writes go straight to the server (Daphne buffers nothing and never blocks a send). When the server
    reports that the socket stopped draining (`pause`), frames wait in `pending`, at most
    MAX_PENDING_FRAMES; past that the stream is closed with a `reset` frame so the client reconnects and
    refetches, instead of letting one stalled reader grow the worker's memory.
    """

    __slots__ = ("closed", "id", "max_pending", "member_id", "paused", "pending", "send", "topics")

    def __init__(self, connection_id: str, member_id: int | None, send: Send, *, max_pending: int) -> None:
        self.id = connection_id
        self.member_id = member_id
        self.send = send
        self.topics: set[str] = set()
        self.pending: deque[dict[str, Any]] | None = None
        self.paused = False
        self.closed = False
        self.max_pending = max_pending

    async def write(self, message: dict[str, Any]) -> bool:
        """Write or queue one body message; False if the stream is closed or was just closed for overflow."""
        if self.closed:
            return False
        if self.paused:
            if self.pending is None:
                self.pending = deque()
            if len(self.pending) >= self.max_pending:
                await self.close(reset=True)
                return False
            self.pending.append(message)
            return True
        await self.send(message)
        return True

    def pause(self) -> None:
        self.paused = True

    async def resume(self) -> None:
        self.paused = False
        while self.pending and not self.paused and not self.closed:
            await self.send(self.pending.popleft())
        if not self.pending:
            self.pending = None

    async def close(self, *, reset: bool = False) -> None:
        """End the stream from the server side; the server then reports the disconnect to the stream's task."""
        if self.closed:
            return
        self.closed = True
        self.pending = None
        if reset:
            await self.send(body(b'event: reset\ndata: {"reason":"slow_consumer"}\n\n'))
        await self.send(_END_OF_STREAM)


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

    async def fan_out(self, topic: str, frame: bytes) -> int:
        """Write one frame to every local subscriber of `topic`; returns how many streams took it."""
        subscribers = self.topics.get(topic)
        if not subscribers:
            return 0
        message = body(frame)
        delivered = 0
        # A copy: a write can close a stream, whose cleanup edits the set.
        for conn in tuple(subscribers):
            if conn.closed:
                continue
            try:
                if await conn.write(message):
                    delivered += 1
                else:
                    # An open stream refuses a frame only when its backlog overflowed and it was closed.
                    self.stats["overflow_closed"] += 1
            except Exception:
                # One broken stream must not stop delivery to the others.
                logger.exception("write to connection %s failed", conn.id)
        self.stats["events"] += 1
        self.stats["delivered"] += delivered
        return delivered

    async def write_all(self, chunk: bytes, *, batch: int = 2000) -> None:
        """Write `chunk` (a keep-alive) to every stream, yielding between batches to keep the loop responsive."""
        message = body(chunk)
        for index, conn in enumerate(tuple(self.connections.values())):
            if not conn.paused:
                try:
                    await conn.write(message)
                except Exception:
                    logger.exception("keep-alive write to connection %s failed", conn.id)
            if index % batch == batch - 1:
                await asyncio.sleep(0)
