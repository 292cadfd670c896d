"""The load client: one process holding many SSE streams cheaply, driven by the benchmark over a pipe.

Raw asyncio (a Protocol per stream, no task, no StreamReader, no httpx), uvloop when installed. Each stream
is a socket bound to a source address 127.0.0.x with IP_BIND_ADDRESS_NO_PORT (the port is picked at
connect, per destination, so one source address is not capped at ~28,000 ports over all workers), then
the configured request (`GET /realtime/connect?topics=...` for livesite, `GET /events/?channel=...` for
django-eventstream) over HTTP/1.1, parsed as chunked transfer encoding and SSE frames.

A stream counts as held at livesite's `connected` frame (ready_on="connected"), or, for a server without
such a frame (django-eventstream opens with a padding comment and `event: stream-open`), once the headers
and the first body bytes arrived (ready_on="first-bytes"). Benchmark events are frames of type
`bench.tick` whose JSON holds `seq` and `sent_at` either in livesite's envelope (`{"id", ..., "data":
{"seq", "sent_at"}, "published_at"}`) or flat (`{"seq", "sent_at", "published_at"}`, the peer's).

Every delivery of a benchmark event is recorded as (receive time - the event's send time) and (receive
time - its `published_at`). All streams receive the same bytes for an event (or for the several events
a worker writes as one chunk), so the parsed result of a chunk is cached by its bytes: after the first
stream, a delivery costs one dict lookup.

Frames of the event types listed in config["watch_types"] (optional) are recorded per stream as they
are, for benchmarks whose events are not the publisher's own `bench.tick` ones (e.g. coalesced
`like.created`): each distinct event id once (type, data) with every stream's receive time, and per stream
the ids in the order received. The parent side of a client process is `ClientProcess`.

It says ("ready", pid) once started, then waits for ("connect",) and answers ("connected", {...}) when every
stream is open or has failed. Then commands, each answered on the pipe: ("expect", events) -> ("ok",) (also
starts a new measurement: counters and latencies from before are dropped); ("status",) -> ("status", {...});
("result",) -> ("result", {...}) and carry on; ("trim", {port: keep}) -> ("trimmed", open streams) after
closing all but the first `keep` streams to each port (closed on purpose: not counted as lost); ("stop",) ->
("result", {...}), then the process closes every stream and exits. It also exits by itself at its deadline.
"""

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import threading
import time
from array import array
from collections import Counter
from typing import Any

from bench.procs import die_with_parent, raise_nofile_limit

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
TICK = b"bench.tick"
_now = time.time


class Stream(asyncio.Protocol):
    """One SSE stream. Parses chunked encoding and frames; hands benchmark events to its Client."""

    __slots__ = (
        "chunked",
        "client",
        "closed_on_purpose",
        "connection_id",
        "headers_done",
        "port",
        "raw",
        "ready",
        "seen",
        "sse",
        "transport",
    )

    def __init__(self, client: "Client", ready: asyncio.Future, port: int = 0) -> None:
        self.client = client
        self.port = port
        self.closed_on_purpose = False
        self.ready: asyncio.Future | None = ready
        self.transport: asyncio.Transport | None = None
        self.raw = b""
        self.sse = b""
        self.headers_done = False
        self.chunked = False
        self.connection_id = ""
        self.seen: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.client.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if self.ready is not None:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"closed before 'connected': {exc!r}"))
            return
        if self.closed_on_purpose:
            return
        client.open_streams -= 1
        client.lost_streams += 1

    def data_received(self, data: bytes) -> None:
        now = _now()
        client = self.client
        if not self.raw:
            seqs = client.cache.get(data)
            if seqs is not None:
                for seq in seqs:
                    client.record(self, seq, now)
                return
            whole = self.headers_done
        else:
            data = self.raw + data
            whole = False
        self.raw = b""
        self._parse(data, now, whole)

    def _parse(self, raw: bytes, now: float, whole: bool) -> None:
        pos = 0
        if not self.headers_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                self.raw = raw
                return
            head = raw[:end].lower()
            if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
                status_line = raw[:end].split(b"\r\n", 1)[0].decode("latin-1")
                self._fail(f"status {status_line!r}")
                return
            self.chunked = b"transfer-encoding: chunked" in head
            self.headers_done = True
            pos = end + 4
        if self.ready is not None and self.client.ready_on_first_bytes and pos < len(raw) and not self.ready.done():
            self.ready.set_result(now)
        seqs: list[int] | None = []
        length = len(raw)
        while pos < length:
            if self.chunked:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                if length < eol + size + 4:
                    break
                payload = raw[eol + 2 : eol + 2 + size]
                pos = eol + size + 4
                if size == 0:
                    self.transport.close()
                    return
            else:
                payload, pos = raw[pos:], length
            sse = self.sse + payload if self.sse else payload
            while True:
                end = sse.find(b"\n\n")
                if end < 0:
                    break
                seq = self._frame(sse[:end], now)
                if seq is None:
                    seqs = None
                elif seqs is not None:
                    seqs.append(seq)
                sse = sse[end + 2 :]
            self.sse = sse
        self.raw = raw[pos:]
        if whole and seqs and not self.raw and not self.sse:
            # Whole chunks of benchmark frames only: every other stream gets these same bytes.
            self.client.cache[raw] = tuple(seqs)

    def _frame(self, frame: bytes, now: float) -> int | None:
        client = self.client
        if frame.startswith(b":"):
            client.comments += 1  # livesite's keep-alive; the peer's 2 KiB padding when it opens
            return None
        event, data, event_id = b"message", b"", b""
        for line in frame.split(b"\n"):
            if line.startswith(b"data:"):
                data = line[6:] if line.startswith(b"data: ") else line[5:]
            elif line.startswith(b"event:"):
                event = line[6:].strip()
            elif line.startswith(b"id:"):
                event_id = line[3:].strip()
        if event == TICK:
            seq = client.seq_of(event_id, data)
            client.record(self, seq, now)
            return seq
        if event == b"connected":
            self.connection_id = json.loads(data)["connection_id"]
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(now)
        elif event in (b"reset", b"stream-reset", b"stream-error"):
            client.resets += 1
        elif event == b"keep-alive":
            client.comments += 1  # the peer's keep-alive, `event: keep-alive` with empty data
        elif event == b"stream-open":
            pass  # the peer's first frame
        elif event in client.watch_types:
            client.watch(self, event_id, event, data, now)
        elif data:
            client.other_frames += 1
        return None

    def _fail(self, reason: str) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        self.transport.close()


class Client:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.request = config["request"]
        self.ready_on_first_bytes = config.get("ready_on", "connected") == "first-bytes"
        self.streams: list[Stream] = []
        self.open_streams = 0
        self.lost_streams = 0
        self.errors: Counter[str] = Counter()
        self.connect_secs = array("d")
        self.cache: dict[bytes, tuple[int, ...]] = {}
        self.ids: dict[bytes, int] = {}
        self.events = 0
        self.sent_at = array("d")
        self.published_at = array("d")
        self.counts: list[int] = []
        self.first = array("d")
        self.last = array("d")
        self.lat_sent = array("d")
        self.lat_published = array("d")
        self.received = 0
        self.duplicates = 0
        self.unknown = 0
        self.comments = 0
        self.resets = 0
        self.other_frames = 0
        # Watched event types (config["watch_types"], optional): see the module docstring.
        self.watch_types = frozenset(t.encode() if isinstance(t, str) else t for t in config.get("watch_types", ()))
        self.watched_index: dict[bytes, int] = {}
        self.watched_events: list[tuple[str, str, str]] = []
        self.watched_times: list[array] = []
        self.watched_logs: dict[Stream, list[int]] = {}
        self.watched_received = 0

    # -- connecting -------------------------------------------------------------------------------

    async def open_all(self) -> dict[str, Any]:
        targets = self.config["targets"]
        gate = asyncio.Semaphore(self.config["concurrency"])
        started = _now()
        await asyncio.gather(*(self._open(port, source, gate) for port, source in targets))
        ended = _now()
        return {
            "held": self.open_streams,
            "failed": len(targets) - self.open_streams,
            "errors": dict(self.errors),
            "started": started,
            "ended": ended,
            "connect_secs": self.connect_secs.tobytes(),
        }

    async def _open(self, port: int, source: str, gate: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        timeout = self.config["connect_timeout"]
        async with gate:
            if _now() > self.config["deadline"]:
                self.errors["deadline"] += 1
                return
            started = _now()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            transport = None
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
                ready = loop.create_future()
                stream = Stream(self, ready, port)
                transport, _ = await loop.create_connection(lambda: stream, sock=sock)
                connected_at = await asyncio.wait_for(ready, timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.errors[_describe(exc)] += 1
                if transport is not None:
                    transport.close()
                else:
                    sock.close()
                return
            stream.ready = None
            self.streams.append(stream)
            self.open_streams += 1
            self.connect_secs.append(connected_at - started)

    # -- recording --------------------------------------------------------------------------------

    def expect(self, events: int) -> None:
        """Prepare to record `events` benchmark events (seq 0..events-1) on every stream, from zero."""
        self.events = events
        self.cache = {}
        self.ids = {}
        self.lat_sent = array("d")
        self.lat_published = array("d")
        self.received = 0
        self.duplicates = 0
        self.unknown = 0
        self.sent_at = array("d", bytes(8 * events))
        self.published_at = array("d", bytes(8 * events))
        self.counts = [0] * events
        self.first = array("d", bytes(8 * events))
        self.last = array("d", bytes(8 * events))
        # Duplicate detection: one byte per (stream, event), while that stays small.
        if events * len(self.streams) <= 64_000_000:
            for stream in self.streams:
                stream.seen = bytearray(events)

    def seq_of(self, event_id: bytes, data: bytes) -> int:
        key = event_id or data  # the peer sends no `id:` without event storage; its data is unique per event
        seq = self.ids.get(key)
        if seq is None:
            payload = json.loads(data)
            inner = payload["data"] if isinstance(payload.get("data"), dict) else payload
            seq = int(inner["seq"])
            if not 0 <= seq < self.events:
                self.unknown += 1
                return -1
            self.sent_at[seq] = inner["sent_at"]
            self.published_at[seq] = payload["published_at"]
            self.ids[key] = seq
        return seq

    def record(self, stream: Stream, seq: int, now: float) -> None:
        if seq < 0:
            return
        seen = stream.seen
        if seen is not None:
            if seen[seq]:
                self.duplicates += 1
                return
            seen[seq] = 1
        self.counts[seq] += 1
        if not self.first[seq]:
            self.first[seq] = now
        self.last[seq] = now
        self.lat_sent.append(now - self.sent_at[seq])
        self.lat_published.append(now - self.published_at[seq])
        self.received += 1

    def watch(self, stream: Stream, event_id: bytes, event: bytes, data: bytes, now: float) -> None:
        """Record one frame of a watched type: its receive time, and its place in the stream's sequence."""
        index = self.watched_index.get(event_id)
        if index is None:
            index = self.watched_index[event_id] = len(self.watched_events)
            self.watched_events.append((event_id.decode(), event.decode(), data.decode()))
            self.watched_times.append(array("d"))
        self.watched_times[index].append(now)
        self.watched_logs.setdefault(stream, []).append(index)
        self.watched_received += 1

    def status(self) -> dict[str, Any]:
        status = {
            "received": self.received,
            "open": self.open_streams,
            "lost": self.lost_streams,
            "duplicates": self.duplicates,
            "resets": self.resets,
        }
        if self.watch_types:
            status["watched_received"] = self.watched_received
            status["watched_events"] = [
                (*event, len(times)) for event, times in zip(self.watched_events, self.watched_times, strict=True)
            ]
        return status

    def result(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            **self.status(),
            "counts": self.counts,
            "first": self.first.tobytes(),
            "last": self.last.tobytes(),
            "lat_sent": self.lat_sent.tobytes(),
            "lat_published": self.lat_published.tobytes(),
            "unknown": self.unknown,
            "comments": self.comments,
            "other_frames": self.other_frames,
            "max_rss_kb": usage.ru_maxrss,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            **self.watched_result(),
        }

    def watched_result(self) -> dict[str, Any]:
        """Watched events: (id, type, data) each, their receive times, and per held stream its sequence."""
        if not self.watch_types:
            return {}
        return {
            "watched_events": self.watched_events,
            "watched_times": [times.tobytes() for times in self.watched_times],
            "watched_per_stream": [self.watched_logs.get(stream, []) for stream in self.streams],
        }

    def trim(self, keep: dict[int, int]) -> int:
        """Close all but the first keep[port] streams to each port (on purpose: not counted as lost)."""
        kept: list[Stream] = []
        per_port: Counter[int] = Counter()
        for stream in self.streams:
            per_port[stream.port] += 1
            if per_port[stream.port] <= keep.get(stream.port, 0):
                kept.append(stream)
                continue
            stream.closed_on_purpose = True
            self.open_streams -= 1
            if stream.transport is not None:
                stream.transport.close()
        self.streams = kept
        return self.open_streams

    def close_all(self) -> None:
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()


def _describe(exc: BaseException) -> str:
    errno = getattr(exc, "errno", None)
    return f"{type(exc).__name__}({os.strerror(errno)})" if errno else f"{type(exc).__name__}: {exc}"[:120]


async def _serve(pipe: Any, config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple] = asyncio.Queue()

    def read_commands() -> None:
        # A thread, not loop.add_reader: uvloop (libuv) would make the pipe non-blocking, and a large
        # pipe.send() would then fail half-way.
        while True:
            try:
                command = pipe.recv()
            except (EOFError, OSError):
                command = ("stop", "parent gone")
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command[0] == "stop":
                return

    client = Client(config)
    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    try:
        # Started early (so the workers' baseline memory is read with this process alive: PSS divides
        # shared pages by their users); connects only when told to.
        pipe.send(("ready", os.getpid()))
        command = await asyncio.wait_for(commands.get(), max(0.0, config["deadline"] - _now()))
        if command[0] != "connect":
            return
        pipe.send(("connected", await client.open_all()))
        while True:
            remaining = config["deadline"] - _now()
            if remaining <= 0:
                break
            try:
                command = await asyncio.wait_for(commands.get(), remaining)
            except TimeoutError:
                break
            if command[0] == "expect":
                client.expect(command[1])
                pipe.send(("ok",))
            elif command[0] == "status":
                pipe.send(("status", client.status()))
            elif command[0] == "result":
                pipe.send(("result", client.result()))
            elif command[0] == "trim":
                pipe.send(("trimmed", client.trim(command[1])))
            elif command[0] == "stop":
                if len(command) == 1:
                    pipe.send(("result", client.result()))
                break
    finally:
        client.close_all()
        await asyncio.sleep(0.2)


class ClientProcess:
    """The parent's side of one client process: started with `config`, driven over its pipe from asyncio."""

    def __init__(self, config: dict[str, Any], name: str = "client") -> None:
        import multiprocessing  # Imported here: client processes themselves never need it.

        context = multiprocessing.get_context("spawn")
        self.name = name
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=main, args=(child, config), name=f"bench-{name}", daemon=True)
        self.process.start()
        child.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    async def recv(self, timeout: float) -> tuple:
        """The next message from the process, within `timeout` seconds (TimeoutError, ConnectionError)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()
        fileno = self.pipe.fileno()

        def ready() -> None:
            loop.remove_reader(fileno)
            if not future.done():
                try:
                    future.set_result(self.pipe.recv())
                except (EOFError, OSError) as exc:
                    future.set_exception(ConnectionError(f"{self.name} went away: {exc!r}"))

        loop.add_reader(fileno, ready)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.name} did not answer within {timeout:.0f}s") from None
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(fileno)

    async def ask(self, command: tuple, timeout: float) -> tuple:
        self.pipe.send(command)
        return await self.recv(timeout)

    def stop(self) -> None:
        """Close the pipe (the process then stops by itself) and make sure it is gone, by its PID."""
        with contextlib.suppress(OSError):
            self.pipe.close()
        for stop in (None, self.process.terminate, self.process.kill):
            if stop is not None:
                stop()
            self.process.join(timeout=5)
            if not self.process.is_alive():
                return


def main(pipe: Any, config: dict[str, Any]) -> None:
    """Entry point of a client process (multiprocessing target)."""
    die_with_parent()
    # The parent handles Ctrl-C and stops us by PID.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile_limit()
    runner: Any = asyncio.run
    if config.get("uvloop", True):
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(_serve(pipe, config))
