"""Level 2 of the fan-out: this process's map topic -> connections, and the write path to each stream."""

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from realtime.http import Message

logger = logging.getLogger(__name__)


def body(chunk: bytes, *, more: bool = True) -> "Message":
    """An ASGI body message."""
    return {"type": "http.response.body", "body": chunk, "more_body": more}


class Payload:
    """One chunk on its way to many streams, in the two shapes a stream may take it; each built once.

    `framed` (the chunk in HTTP/1.1 chunked transfer encoding, for direct socket writes) is a plain attribute
    built here: a broadcast reads it once per stream, and a property call there cost more than building it.
    """

    __slots__ = ("_message", "chunk", "framed", "frames")

    def __init__(self, chunk: bytes, frames: int = 1) -> None:
        self.chunk = chunk
        self.frames = frames
        self.framed = b"%x\r\n%b\r\n" % (len(chunk), chunk)
        self._message: Message | None = None

    @property
    def message(self) -> "Message":
        if self._message is None:
            self._message = body(self.chunk)
        return self._message


# How long a stream reset for falling behind may take to read its last frames before its socket is dropped.
RESET_GRACE_SECS = 5.0
RESET_FRAME = b'event: reset\ndata: {"reason":"slow_consumer"}\n\n'
# The last frame of a stream whose worker is stopping: the client reconnects (to another worker, if any).
CLOSING_FRAME = b'event: closing\ndata: {"reason": "shutdown"}\n\n'


class StreamWriter(Protocol):
    """How bytes reach one stream's socket: a server adapter (realtime.servers). Never awaits the socket.

    `write` takes a payload at once or refuses it: False when the stream has ended, or when its bounded
    backlog (payloads the socket has not taken yet) would pass its limit; the caller then resets the stream.
    `end` finishes the response after `final`; with `abort_after_secs`, the connection is dropped after that
    long if the client has not read to the end (a stalled reader must not pin buffers).
    """

    kind: str

    def write(self, payload: Payload) -> bool: ...

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None: ...

    async def aended(self) -> None:
        """Returns once `end` has handed the response's last bytes to the server (at once if not ended)."""


class Connection:
    """One open SSE stream: who owns it, what it reads, and how to write to it.

    Writes never wait for the client: the writer sends at once or keeps a bounded backlog. When the backlog
    is full the stream is ended with a `reset` frame, so the client reconnects and refetches, instead of
    letting one stalled reader grow the worker's memory or delay anybody else's fan-out.
    """

    __slots__ = (
        "catching_up",
        "closed",
        "credential",
        "floors",
        "id",
        "member_id",
        "overflowed",
        "task",
        "topics",
        "writer",
    )

    def __init__(
        self, connection_id: str, member_id: int | None, writer: StreamWriter, credential: str | None = None
    ) -> None:
        self.id = connection_id
        self.member_id = member_id
        # The credential the stream was opened with (realtime.revocation names it): revoking it closes the stream.
        self.credential = credential
        self.writer = writer
        self.topics: set[str] = set()
        self.closed = False
        self.overflowed = False
        # The stream's task while it waits for the client: ending the stream from the server side cancels that
        # wait, so the task cleans up at once.
        self.task: asyncio.Task[object] | None = None
        # Topics this stream is being resumed on (realtime.worker): their live events wait here, with their
        # offsets, until the missed ones are read from the history and written first.
        self.catching_up: dict[str, tuple[list[bytes], list[int]]] | None = None
        # Per resumed topic, the last offset its resume wrote: events up to it may still come the live way
        # (the history had them before this worker received them) and are skipped, once.
        self.floors: dict[str, int] | None = None

    def write(self, payload: Payload) -> bool:
        """Write or queue one payload; False if the stream is closed, or was just reset for falling behind."""
        if self.closed:
            return False
        if self.writer.write(payload):
            return True
        if not self.closed:
            self.overflowed = True
            self.close(RESET_FRAME, abort_after_secs=RESET_GRACE_SECS)
        return False

    def close(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        """End the stream from the server side, after `final` (a last frame saying why)."""
        if self.closed:
            return
        self.closed = True
        self.writer.end(final, abort_after_secs=abort_after_secs)
        if self.task is not None:
            self.task.cancel()


def after_floor(frames: list[bytes], offsets: list[int], floor: int) -> list[bytes]:
    """The frames past offset `floor`, in order. A frame without offset (a gap) passes and ends the floor: the
    offsets after it belong to a new epoch."""
    kept = []
    for frame, offset in zip(frames, offsets, strict=True):
        if offset == 0:
            floor = -1
        if offset == 0 or offset > floor:
            kept.append(frame)
    return kept


class Hub:
    """This process's connections and subscriptions. Owns no I/O but the writes to its streams.

    subscribe/unsubscribe/remove return the topics that gained their first or lost their last local
    subscriber, so the caller can register or deregister this worker for them.
    """

    def __init__(self, *, keepalive_slices: int = 1) -> None:
        self.connections: dict[str, Connection] = {}
        self.topics: dict[str, set[Connection]] = {}
        self.members: dict[int, int] = {}
        self.stats = {"delivered": 0, "overflow_closed": 0, "events": 0, "keepalives_skipped": 0}
        # Keep-alive rounds so far, and per topic the round in which it last fanned out: a stream with an event
        # since its slice's last round needs no keep-alive in this one.
        self.keepalive_round = 0
        self.fanned_out: dict[str, int] = {}
        # The streams dealt into slices by id; each keep-alive round visits the next slice.
        self.keepalive_slices: list[set[Connection]] = [set() for _ in range(max(1, keepalive_slices))]
        # Streams opened per writer kind ("daphne-direct", "uvicorn-direct", "queued"): the tests check which
        # path is in use.
        self.writers: dict[str, int] = {}

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn
        slices = self.keepalive_slices
        slices[hash(conn.id) % len(slices)].add(conn)
        self.writers[conn.writer.kind] = self.writers.get(conn.writer.kind, 0) + 1
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
        slices = self.keepalive_slices
        slices[hash(conn.id) % len(slices)].discard(conn)
        if conn.member_id is not None:
            remaining = self.members.get(conn.member_id, 1) - 1
            if remaining > 0:
                self.members[conn.member_id] = remaining
            else:
                self.members.pop(conn.member_id, None)
        return self.unsubscribe(conn, list(conn.topics))

    def has_topic(self, topic: str) -> bool:
        return topic in self.topics

    async def fan_out(
        self, topic: str, frames: list[bytes], offsets: list[int] | None = None, *, yield_every: int = 1000
    ) -> int:
        """Write a topic's frames, as one chunk, to every local subscriber of `topic`; returns how many streams
        took it.

        The chunk is framed once and the same bytes go to every stream. Yields to the event loop after every
        `yield_every` writes, so requests and keep-alives on this worker do not wait for a whole fan-out to
        16,000 streams; the receive loop awaits it, so events keep their order.
        """
        subscribers = self.topics.get(topic)
        if not subscribers:
            return 0
        payload = Payload(frames[0] if len(frames) == 1 else b"".join(frames), len(frames))
        self.fanned_out[topic] = self.keepalive_round
        delivered = 0
        # A copy: a write can close a stream, whose cleanup edits the set.
        streams = tuple(subscribers)
        for start in range(0, len(streams), yield_every):
            if start:
                await asyncio.sleep(0)
            for conn in streams[start : start + yield_every]:
                # The hot path, once per stream and event: a stream that is neither catching up nor past a
                # resume floor takes the shared payload straight from its writer, with no other Python work.
                if conn.catching_up is None and conn.floors is None:
                    if conn.closed:
                        continue
                    try:
                        if conn.writer.write(payload):
                            delivered += 1
                            continue
                    except Exception:
                        # One broken stream must not stop delivery to the others.
                        logger.exception("write to connection %s failed", conn.id)
                        continue
                    self._refused(conn)
                    continue
                try:
                    delivered += self._write_resuming(conn, topic, payload, frames, offsets)
                except Exception:
                    logger.exception("write to connection %s failed", conn.id)
        self.stats["events"] += 1
        self.stats["delivered"] += delivered
        return delivered

    def _refused(self, conn: Connection) -> None:
        """The writer refused a payload: the stream is closed already, or just fell behind (reset it)."""
        if not conn.closed:
            conn.overflowed = True
            conn.close(RESET_FRAME, abort_after_secs=RESET_GRACE_SECS)
            self.stats["overflow_closed"] += 1

    def _write_resuming(
        self, conn: Connection, topic: str, payload: Payload, frames: list[bytes], offsets: list[int] | None
    ) -> int:
        """A stream being resumed on some topic: this topic's frames may wait, or be cut at its floor; 1 if taken."""
        if conn.closed:
            return 0
        if conn.catching_up is not None and topic in conn.catching_up:
            waiting_frames, waiting_offsets = conn.catching_up[topic]
            waiting_frames.extend(frames)
            waiting_offsets.extend(offsets if offsets is not None else [0] * len(frames))
            return 1
        if conn.floors is not None and topic in conn.floors and offsets is not None:
            floor = conn.floors[topic]
            kept = after_floor(frames, offsets, floor)
            if offsets[-1] >= floor or 0 in offsets:
                del conn.floors[topic]  # Past it: what follows is new to this stream.
                conn.floors = conn.floors or None
            if not kept:
                return 0
            payload = Payload(b"".join(kept), len(kept))
        if conn.write(payload):
            return 1
        if conn.overflowed:
            self.stats["overflow_closed"] += 1
        return 0

    async def write_all(self, chunk: bytes, *, yield_every: int = 1000) -> None:
        """One keep-alive round: write `chunk` to the streams of the next slice (all of them with one slice)
        that had no event since that slice's previous round, yielding between batches.

        The worker runs a round for one slice each second, so a pass over every stream is spread over the
        keep-alive interval: done at once, on every worker in the same instant, it held up deliveries for a
        second or more at 100,000 streams (docs/benchmarks.md A.15).

        A stream on a topic that fanned out since then skips it: that write already kept proxies from timing
        the stream out and would have found a dead reader. Under a steady broadcast this saves a write per
        stream and round, and the round no longer holds up the next event's fan-out on this worker for a whole
        pass over its streams. (A stream that joined such a topic after its last event may go up to two
        intervals without a write; proxies' read timeouts are set well above one.)
        A stream whose backlog is full is reset by it: a keep-alive that cannot be taken means a dead reader.
        """
        payload = Payload(chunk)
        previous, self.keepalive_round = self.keepalive_round, self.keepalive_round + 1
        slices = len(self.keepalive_slices)
        since = previous - slices  # the slice's previous round; fan-outs after it are marked later than it
        fanned_out = self.fanned_out
        if self.keepalive_round % slices == 0:
            # Topics without an event in the last whole cycle are forgotten: the map stays as small as the
            # active set.
            self.fanned_out = {topic: at for topic, at in fanned_out.items() if at > since and topic in self.topics}
        streams = tuple(self.keepalive_slices[previous % slices])
        for start in range(0, len(streams), yield_every):
            if start:
                await asyncio.sleep(0)
            for conn in streams[start : start + yield_every]:
                if (
                    conn.catching_up is None
                    and conn.floors is None
                    and any(fanned_out.get(topic, since) > since for topic in conn.topics)
                ):
                    self.stats["keepalives_skipped"] += 1
                    continue
                try:
                    if not conn.write(payload) and conn.overflowed:
                        self.stats["overflow_closed"] += 1
                except Exception:
                    logger.exception("keep-alive write to connection %s failed", conn.id)
