"""The SSE readers: one client process holds many streams cheaply, driven by bench/harness.py over a pipe.

Raw asyncio (a Protocol per stream, no task), uvloop when installed. Each stream is a socket bound to a source address
127.0.0.x with IP_BIND_ADDRESS_NO_PORT (the port is picked per destination at connect, so one source address is not
capped at ~28,000 ports over all workers), then an HTTP/1.1 request (config["request"], or per target: targets are
(port, source[, request])), parsed as chunked encoding and SSE frames. A stream is held at livesite's `connected`
frame, or with ready_on="first-bytes" (django-eventstream has no such frame) once body bytes arrived. `bench.tick`
events carry `seq` and `sent_at` in livesite's envelope or flat (the peer's); each delivery is timed from `sent_at`
and from `published_at`. A broadcast sends every stream the same bytes, so a chunk's parse is cached by its bytes.
Frames of config["watch_types"] are kept as they are (each event once with every stream's receive time, and per
stream the order received). Protocol: ("ready", pid); ("connect",) -> ("connected", {...}); then ("expect", n) ->
("ok",) (a new measurement of seq 0..n-1), ("status",), ("result",), ("trim", {port: keep}) -> ("trimmed", open)
(all but the first `keep` streams to each port closed on purpose), ("stop",) -> ("result", {...}) and exit; with
config["client_class"] (a Client subclass), also (name, *args) -> (name, client.on_<name>(*args)). It also exits
at config["deadline"] (wall clock) and when the parent dies (PR_SET_PDEATHSIG).
"""

import asyncio
import contextlib
import ctypes
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

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
TICK = b"bench.tick"
CACHE_LIMIT = 20_000  # parsed chunks kept: plenty for broadcasts, bounded for one-stream topics
_now = time.time


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when the process that started it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (the hard one cannot be raised here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class Stream(asyncio.Protocol):
    """One SSE stream. Parses chunked encoding and frames; hands benchmark events to its Client."""

    __slots__ = ("chunked", "client", "closed_on_purpose", "headers_done", "port", "raw", "ready", "request")
    __slots__ += ("seen", "sse", "transport")

    def __init__(self, client: "Client", ready: asyncio.Future, port: int, request: bytes) -> None:
        self.client, self.ready, self.port, self.request = client, ready, port, request
        self.closed_on_purpose = self.headers_done = self.chunked = False
        self.transport: asyncio.Transport | None = None
        self.raw = self.sse = b""
        self.seen: bytearray | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ready is not None:
            if not self.ready.done():
                self.ready.set_exception(ConnectionError(f"closed before 'connected': {exc!r}"))
        elif not self.closed_on_purpose:
            self.client.open_streams -= 1
            self.client.lost_streams += 1

    def data_received(self, data: bytes) -> None:
        now = _now()
        if not self.raw:
            seqs = self.client.cache.get(data)
            if seqs is not None:
                for seq in seqs:
                    self.client.record(self, seq, now)
                return
            whole = self.headers_done
        else:
            data, whole = self.raw + data, False
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
                self._fail("status " + repr(raw[:end].partition(b"\r")[0].decode("latin-1")))
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
                payload, pos = raw[eol + 2 : eol + 2 + size], eol + size + 4
                if size == 0:
                    self.transport.close()
                    return
            else:
                payload, pos = raw[pos:], length
            sse = self.sse + payload if self.sse else payload
            while (end := sse.find(b"\n\n")) >= 0:
                seq = self._frame(sse[:end], now)
                if seq is None:
                    seqs = None
                elif seqs is not None:
                    seqs.append(seq)
                sse = sse[end + 2 :]
            self.sse = sse
        self.raw = raw[pos:]
        if whole and seqs and not self.raw and not self.sse:
            # Whole chunks of benchmark frames only: other streams of the topic get these same bytes.
            if len(self.client.cache) >= CACHE_LIMIT:
                self.client.cache.clear()
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
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(now)
        elif event in (b"reset", b"stream-reset", b"stream-error"):
            client.resets += 1
        elif event == b"keep-alive":
            client.comments += 1  # the peer's keep-alive: `event: keep-alive`, empty data
        elif event in client.watch_types:
            client.watch(self, event_id, event, data, now)
        elif data and event != b"stream-open":  # stream-open: the peer's first frame
            client.other_frames += 1
        return None

    def _fail(self, reason: str) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
        self.transport.close()


class Client:
    """Every stream of one process, and what they received."""

    stream_class: type[Stream] = Stream  # a subclass may read more of each stream (bench/storm.py)

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.ready_on_first_bytes = config.get("ready_on", "connected") == "first-bytes"
        # Each delivery's own latency (two appends per delivery); without it only what a broadcast's completion
        # needs is kept: per event its count, first and last receive time (a lean client for 100,000 streams).
        self.latencies = config.get("latencies", True)
        self.streams: list[Stream] = []
        self.open_streams = self.lost_streams = 0
        self.errors: Counter[str] = Counter()
        self.connect_secs = array("d")
        self.comments = self.resets = self.other_frames = 0
        self.watch_types = frozenset(t.encode() for t in config.get("watch_types", ()))
        self.watched_index: dict[bytes, int] = {}
        self.watched_events: list[tuple[str, str, str]] = []
        self.watched_times: list[array] = []
        self.watched_logs: dict[Stream, list[int]] = {}
        self.watched_received = 0
        self.expect(0)

    async def open_all(self) -> dict[str, Any]:
        targets = self.config["targets"]
        gate = asyncio.Semaphore(self.config["concurrency"])
        started = _now()
        await asyncio.gather(*(self._open(target, gate) for target in targets))
        result = {"held": self.open_streams, "failed": len(targets) - self.open_streams, "errors": dict(self.errors)}
        return result | {"started": started, "ended": _now(), "connect_secs": self.connect_secs.tobytes()}

    async def _open(self, target: tuple, gate: asyncio.Semaphore) -> None:
        port, source, request = (*target, self.config["request"])[:3]
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
                stream = self.stream_class(self, loop.create_future(), port, request)
                transport, _ = await loop.create_connection(lambda: stream, sock=sock)
                connected_at = await asyncio.wait_for(stream.ready, timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                errno = getattr(exc, "errno", None)
                self.errors[f"{type(exc).__name__}({os.strerror(errno)})" if errno else repr(exc)[:120]] += 1
                (sock if transport is None else transport).close()
                return
            stream.ready = None
            self.streams.append(stream)
            self.open_streams += 1
            self.connect_secs.append(connected_at - started)

    def expect(self, events: int) -> None:
        """Record `events` benchmark events (seq 0..events-1) on every stream, from zero."""
        self.events = events
        self.cache: dict[bytes, tuple[int, ...]] = {}
        self.ids: dict[bytes, int] = {}
        self.lat_sent, self.lat_published = array("d"), array("d")
        self.received = self.duplicates = self.unknown = 0
        self.sent_at, self.published_at = array("d", bytes(8 * events)), array("d", bytes(8 * events))
        self.first, self.last = array("d", bytes(8 * events)), array("d", bytes(8 * events))
        self.counts = [0] * events
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
        if self.latencies:
            self.lat_sent.append(now - self.sent_at[seq])
            self.lat_published.append(now - self.published_at[seq])
        self.received += 1

    def watch(self, stream: Stream, event_id: bytes, event: bytes, data: bytes, now: float) -> None:
        index = self.watched_index.get(event_id)
        if index is None:
            index = self.watched_index[event_id] = len(self.watched_events)
            self.watched_events.append((event_id.decode(), event.decode(), data.decode()))
            self.watched_times.append(array("d"))
        self.watched_times[index].append(now)
        self.watched_logs.setdefault(stream, []).append(index)
        self.watched_received += 1

    def status(self) -> dict[str, Any]:
        status = {"received": self.received, "open": self.open_streams, "lost": self.lost_streams}
        status |= {"duplicates": self.duplicates, "resets": self.resets}
        if self.watch_types:
            status["watched_received"] = self.watched_received
            pairs = zip(self.watched_events, self.watched_times, strict=True)
            status["watched_events"] = [(*event, len(times)) for event, times in pairs]
        return status

    def result(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        arrays = ("first", "last", "lat_sent", "lat_published", "published_at")
        result = {**self.status(), "counts": self.counts, **{key: getattr(self, key).tobytes() for key in arrays}}
        result |= {"unknown": self.unknown, "comments": self.comments, "other_frames": self.other_frames}
        result |= {"max_rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}
        if self.watch_types:
            result["watched_events"] = self.watched_events
            result["watched_times"] = [times.tobytes() for times in self.watched_times]
            result["watched_per_stream"] = [self.watched_logs.get(stream, []) for stream in self.streams]
        return result

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


async def _serve(pipe: Any, config: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple] = asyncio.Queue()

    def read_commands() -> None:
        # A thread, not loop.add_reader: uvloop would make the pipe non-blocking and a large send() would fail.
        while True:
            try:
                command = pipe.recv()
            except (EOFError, OSError):
                command = ("stop", "parent gone")
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command[0] == "stop":
                return

    client = config.get("client_class", Client)(config)  # a scenario's subclass (a class pickles by name)
    threading.Thread(target=read_commands, name="commands", daemon=True).start()
    if nap_secs := config.get("nap_secs", 0.0):
        # Read in batches: after each turn of the loop, sleep outside epoll. Bytes arriving meanwhile wake nobody,
        # so a server's write to one of our sockets no longer pays for waking this process each time (on this VM,
        # a cross-core wake-up). Every receipt is up to nap_secs late, and that delay counts against the server.
        def nap() -> None:
            time.sleep(nap_secs)
            loop.call_soon(nap)

        loop.call_soon(nap)
    try:
        # Started early (the workers' baseline memory is read with this process alive); connects when told.
        pipe.send(("ready", os.getpid()))
        command = await asyncio.wait_for(commands.get(), max(0.0, config["deadline"] - _now()))
        if command[0] != "connect":
            return
        pipe.send(("connected", await client.open_all()))
        while (remaining := config["deadline"] - _now()) > 0:
            try:
                command = await asyncio.wait_for(commands.get(), remaining)
            except TimeoutError:
                break
            kind = command[0]
            if kind == "expect":
                client.expect(command[1])
                pipe.send(("ok",))
            elif kind in ("status", "result"):
                pipe.send((kind, getattr(client, kind)()))
            elif kind == "trim":
                pipe.send(("trimmed", client.trim(command[1])))
            elif (handler := getattr(client, f"on_{kind}", None)) is not None:
                pipe.send((kind, handler(*command[1:])))  # a subclass's own commands
            elif kind == "stop":
                if len(command) == 1:
                    pipe.send(("result", client.result()))
                break
    finally:
        for stream in client.streams:
            if stream.transport is not None:
                stream.transport.close()
        await asyncio.sleep(0.2)


def main(pipe: Any, config: dict[str, Any]) -> None:
    """Entry point of a client process (multiprocessing target)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us by PID
    raise_nofile_limit()
    runner: Any = asyncio.run
    if config.get("uvloop", True):
        with contextlib.suppress(ImportError):
            import uvloop

            runner = uvloop.run
    runner(_serve(pipe, config))


class ClientProcess:
    """The parent's side of one client process: started with `config`, driven over its pipe from asyncio."""

    def __init__(self, config: dict[str, Any], name: str) -> None:
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

    async def ask(self, command: tuple, timeout: float) -> Any:
        """Send `command`; the payload of the answer (None for a bare ("ok",))."""
        self.pipe.send(command)
        reply = await self.recv(timeout)
        return reply[1] if len(reply) > 1 else None

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
