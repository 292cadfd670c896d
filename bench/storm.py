"""Reconnect storm: every stream on one worker, that worker SIGKILLed, every client resumes on a survivor.

    .venv/bin/python -m bench.storm                                   # 10,000 streams, 3 workers, 20 events/s
    .venv/bin/python -m bench.storm --connections 1000 --after-kill 10 # a quick look
    .venv/bin/python -m bench.storm --resume query                    # ?since= instead of Last-Event-ID

Its own redis-server and W workers (default 3); N streams (`GET /realtime/connect?topics=bench.storm`) all on
w0, held by the load client (bench/loadclient.py, its StormClient subclass below). A broadcast of --rate events/s
(single-event `POST /api/publish`, `bench.tick` with `seq`) goes through w1 for --before-kill + --after-kill
seconds; --before-kill seconds in, w0 gets SIGKILL. Each client then waits a jittered delay (uniform within
--jitter, as static/realtime/realtime.js does) and reconnects to one of the survivors picked at random, with the
position of the last event it received: `Last-Event-ID: <topic>:<epoch>:<offset>` (--resume header, what a
native EventSource sends) or `?since=` (--resume query); a failed attempt is retried after a backoff, at most
--max-attempts times. A stream that had no event yet resumes from the position its `connected` frame gave.

Reported: time from the kill until each stream (a) saw its connection end, (b) sent its reconnect, (c) got
`connected` on a survivor, (d) was resumed: received an event published after its reconnect request (events
reach a stream in offset order, so everything before it has been delivered or is lost for good); and per
client, the events lost and duplicated: the `bench.tick` events it received (by JSON "id"; checked against the
ids each POST was answered 202 with) against every event accepted while it existed. Also `gap` frames, events
out of offset order, the survivors' /realtime/stats deltas (history reads, shared reads, resumed topics, resume
gaps, replayed events, sequencer counters), and the CPU of every process through the storm.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from array import array
from collections import Counter
from typing import Any

from bench import harness as h
from bench.loadclient import IP_BIND_ADDRESS_NO_PORT, Client, Stream

STATS = (
    "connections",
    "dispatch_history_reads",
    "dispatch_history_reads_shared",
    "history_failures",
    "resumed_topics",
    "resume_gaps",
    "replayed_events",
    "held_rounds",
    "duplicate_events",
    "filled_events",
    "gaps",
    "received_events",
    "received_messages",
    "stray_events",
)
PER_STREAM_D = ("lost_at", "due_at", "req_at", "tcp_at", "conn_at", "first_at", "resumed_at", "latest_at")
PER_STREAM_I = ("attempts", "drops", "gaps", "dups", "disorder", "lost", "extra", "port", "tail_resumed")
# Kernel counters (/proc/net/netstat) of the listening sockets: a full accept queue drops SYNs.
TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "TCPReqQFullDoCookies",
    "SyncookiesSent",
    "SyncookiesRecv",
    "SyncookiesFailed",
)


# -- the client side (runs in the load-client processes) ------------------------------------------------------


class StormStream(Stream):
    """A stream of one logical client (`idx`): the client keeps its state across reconnects."""

    __slots__ = ("idx", "position")

    def __init__(self, client: "StormClient", ready: asyncio.Future, port: int, request: bytes) -> None:
        super().__init__(client, ready, port, request)
        self.idx = -1
        self.position = ""  # from the first `connected` frame: where the topic stood when it joined

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ready is None and not self.closed_on_purpose:
            self.client.stream_lost(self)
        else:
            super().connection_lost(exc)

    def _frame(self, frame: bytes, now: float) -> int | None:
        if frame.startswith(b"event: "):
            kind = frame[7 : frame.find(b"\n")]
            if kind == b"connected" and self.idx < 0:
                data = frame.partition(b"\ndata: ")[2]
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.position = json.loads(data)["positions"].get(self.client.topic, "")
            elif kind in (b"gap", b"closing", b"error"):
                self.client.control(self, kind.decode(), frame, now)
                return None
        return super()._frame(frame, now)


class StormClient(Client):
    """Holds its streams, reconnects each to a survivor after a jittered delay, and checks what each received."""

    stream_class = StormStream

    def __init__(self, config: dict[str, Any]) -> None:
        self.topic = config["topic"]
        self.survivors: list[int] = list(config["reconnect_ports"])
        self.jitter: tuple[float, float] = tuple(config["jitter"])
        self.rng = random.Random(f"{config['seed']}-{config['targets'][0][1]}-{len(config['targets'])}")
        self.per: dict[str, array] = {}
        self.sources: list[str] = []
        self.positions: list[str] = []
        self.seen_of: list[bytearray | None] = []
        self.tasks: set[asyncio.Task] = set()
        self.errors_reconnect: Counter[str] = Counter()
        self.controls: Counter[str] = Counter()
        self.gap_samples: list[str] = []
        self.given_up = self.id_conflicts = 0
        super().__init__(config)

    async def open_all(self) -> dict[str, Any]:
        result = await super().open_all()
        n = len(self.streams)
        self.per = {key: array("d", bytes(8 * n)) for key in PER_STREAM_D}
        self.per |= {key: array("i", bytes(4 * n)) for key in PER_STREAM_I}
        self.last_seq, self.last_offset = array("i", [-1] * n), array("q", bytes(8 * n))
        for index, stream in enumerate(self.streams):
            stream.idx = index
            self.per["port"][index] = stream.port
            self.sources.append(stream.transport.get_extra_info("sockname")[0])
            self.positions.append(stream.position)
        self.seen_of = [stream.seen for stream in self.streams]
        return result

    def expect(self, events: int) -> None:
        super().expect(events)
        self.json_id: list[str | None] = [None] * events
        self.sse_id: list[bytes | None] = [None] * events
        self.offset_of = array("q", bytes(8 * events))
        # Per event: receipts and the last one on the streams' first connections, and on streams once resumed.
        self.orig_counts, self.orig_last = array("i", bytes(4 * events)), array("d", bytes(8 * events))
        self.live_counts, self.live_last = array("i", bytes(4 * events)), array("d", bytes(8 * events))
        self.seen_of = [stream.seen for stream in self.streams]

    def seq_of(self, event_id: bytes, data: bytes) -> int:
        key = event_id or data
        seq = self.ids.get(key)
        if seq is None:
            payload = json.loads(data)
            seq = int(payload["data"]["seq"])
            if not 0 <= seq < self.events:
                self.unknown += 1
                return -1
            if self.sse_id[seq] is not None and self.sse_id[seq] != event_id:
                self.id_conflicts += 1  # the same event under two positions
            self.sent_at[seq] = payload["data"]["sent_at"]
            self.published_at[seq] = payload["published_at"]
            self.json_id[seq], self.sse_id[seq] = payload["id"], event_id
            self.offset_of[seq] = int(payload.get("offset") or 0)
            self.ids[key] = seq
        return seq

    def record(self, stream: Stream, seq: int, now: float) -> None:
        if seq < 0:
            return
        idx = stream.idx  # type: ignore[attr-defined]
        seen = stream.seen
        if seen is not None:
            if seen[seq]:
                self.duplicates += 1
                if idx >= 0:
                    self.per["dups"][idx] += 1
                return
            seen[seq] = 1
        self.counts[seq] += 1
        if not self.first[seq]:
            self.first[seq] = now
        self.last[seq] = now
        self.received += 1
        if idx < 0:
            return
        per = self.per
        per["latest_at"][idx] = now
        if not per["drops"][idx]:
            self.orig_counts[seq] += 1
            self.orig_last[seq] = now
        elif per["resumed_at"][idx]:
            self.live_counts[seq] += 1
            self.live_last[seq] = now
        offset = self.offset_of[seq]
        if offset <= self.last_offset[idx]:
            self.per["disorder"][idx] += 1
        else:
            self.last_offset[idx], self.last_seq[idx] = offset, seq
        if per["req_at"][idx] and not per["resumed_at"][idx]:
            if not per["first_at"][idx]:
                per["first_at"][idx] = now
            if self.published_at[seq] >= per["req_at"][idx]:
                per["resumed_at"][idx] = now

    def control(self, stream: StormStream, kind: str, frame: bytes, now: float) -> None:
        self.controls[kind] += 1
        if kind == "gap" and stream.idx >= 0:
            self.per["gaps"][stream.idx] += 1
        if len(self.gap_samples) < 5:
            self.gap_samples.append(frame.decode(errors="replace")[:300])

    def stream_lost(self, stream: StormStream) -> None:
        self.open_streams -= 1
        idx = stream.idx
        if idx < 0 or not self.survivors:
            self.lost_streams += 1
            return
        per, now = self.per, _now()
        if not per["lost_at"][idx]:
            per["lost_at"][idx] = now
        per["drops"][idx] += 1
        for key in ("req_at", "tcp_at", "conn_at", "first_at", "resumed_at"):
            per[key][idx] = 0.0
        delay = self.rng.uniform(*self.jitter)
        per["due_at"][idx] = now + delay  # when this client means to reconnect; req_at: when it did
        asyncio.get_running_loop().call_later(delay, self._start_reopen, idx)

    def _start_reopen(self, idx: int) -> None:
        task = asyncio.ensure_future(self.reopen(idx))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def position_of(self, idx: int) -> str:
        """`<topic>:<epoch>:<offset>` of the last event this client received, else where it joined."""
        seq = self.last_seq[idx]
        if seq >= 0 and self.sse_id[seq]:
            return self.sse_id[seq].decode()
        return f"{self.topic}:{self.positions[idx] or ':0'}"

    def request_for(self, idx: int) -> bytes:
        position, path = self.position_of(idx), f"/realtime/connect?topics={self.topic}"
        headers = "Host: 127.0.0.1\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        if self.config["resume"] == "query":
            path += f"&since={position}"
        else:
            headers += f"Last-Event-ID: {position}\r\n"
        return f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode()

    async def reopen(self, idx: int) -> None:
        loop, per, timeout = asyncio.get_running_loop(), self.per, self.config["reconnect_timeout"]
        for attempt in range(1, self.config["max_attempts"] + 1):
            if _now() > self.config["deadline"] - 1:
                self.errors_reconnect["deadline"] += 1
                break
            per["attempts"][idx] += 1
            port = self.rng.choice(self.survivors)
            stream = StormStream(self, loop.create_future(), port, self.request_for(idx))
            stream.idx, stream.seen = idx, self.seen_of[idx]
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            transport = None
            per["req_at"][idx] = _now()
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((self.sources[idx], 0))
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
                per["tcp_at"][idx] = _now()
                transport, _ = await loop.create_connection(lambda stream=stream: stream, sock=sock)
                connected_at = await asyncio.wait_for(stream.ready, timeout)
                if transport.is_closing():
                    raise ConnectionError("closed right after 'connected'")
            except (OSError, TimeoutError, ConnectionError) as exc:
                errno = getattr(exc, "errno", None)
                self.errors_reconnect[f"{type(exc).__name__}({os.strerror(errno)})" if errno else repr(exc)[:120]] += 1
                (sock if transport is None else transport).close()
                per["req_at"][idx] = per["tcp_at"][idx] = 0.0
                await asyncio.sleep(self.rng.uniform(*self.jitter) * attempt)
                continue
            stream.ready = None
            self.streams[idx] = stream
            self.open_streams += 1
            per["conn_at"][idx], per["port"][idx] = connected_at, port
            return
        self.given_up += 1
        self.lost_streams += 1

    def status(self) -> dict[str, Any]:
        status = super().status()
        if self.per:
            status["reconnected"] = sum(1 for value in self.per["conn_at"] if value)
            status["resumed"] = sum(1 for value in self.per["resumed_at"] if value)
            status["down"] = sum(1 for value in self.per["lost_at"] if value) - status["reconnected"]
        return status | {"given_up": self.given_up, "controls": dict(self.controls)}

    def on_verify(self, accepted: bytes) -> dict[str, Any]:
        """Per stream: accepted events never received (lost) and received events not accepted (extra); every
        per-stream reading; the JSON id seen for each seq, for the harness to check against the 202 answers."""
        accepted_bits = int.from_bytes(accepted, "big")
        wanted = accepted.count(1)
        for idx, seen in enumerate(self.seen_of):
            if seen is None:
                continue
            seen_bits = int.from_bytes(seen, "big")
            both = (accepted_bits & seen_bits).bit_count()
            self.per["lost"][idx] = wanted - both
            self.per["extra"][idx] = seen_bits.bit_count() - both
            per = self.per
            if per["conn_at"][idx] and not per["resumed_at"][idx] and wanted == both:
                # Reconnected after the last event was published: resumed once its replay arrived.
                per["resumed_at"][idx] = max(per["conn_at"][idx], per["latest_at"][idx])
                per["tail_resumed"][idx] = 1
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result = {key: values.tobytes() for key, values in self.per.items()}
        result |= {"json_ids": self.json_id, "counts": self.counts, "first": self.first.tobytes()}
        result |= {"last": self.last.tobytes(), "errors_reconnect": dict(self.errors_reconnect)}
        for key in ("orig_counts", "orig_last", "live_counts", "live_last"):
            result[key] = getattr(self, key).tobytes()
        result |= {"controls": dict(self.controls), "gap_samples": self.gap_samples, "given_up": self.given_up}
        result |= {"id_conflicts": self.id_conflicts, "unknown": self.unknown, "resets": self.resets}
        result |= {"other_frames": self.other_frames, "comments": self.comments, "duplicates": self.duplicates}
        result |= {"open": self.open_streams, "max_rss_kb": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}
        return result


_now = time.time


# -- the harness side --------------------------------------------------------------------------------------


def tcp_counters() -> dict[str, int]:
    """The machine's TCP_COUNTERS so far (TcpExt of /proc/net/netstat)."""
    with open("/proc/net/netstat") as handle:
        lines = handle.read().splitlines()
    values: dict[str, int] = {}
    for names, numbers in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            values |= dict(zip(names.split()[1:], map(int, numbers.split()[1:]), strict=False))
    return {name: values.get(name, 0) for name in TCP_COUNTERS}


def softirq_seconds() -> float:
    """CPU seconds the machine spent in soft interrupts so far (loopback TCP is processed there)."""
    with open("/proc/stat") as handle:
        return int(handle.readline().split()[7]) / h.CLK_TCK


def listen_backlog(port: int) -> int | None:
    """The accept-queue limit of the socket listening on `port` (`ss -ltn`: Send-Q)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=5).stdout
        return int(out.split()[2])
    return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workers", type=int, default=3, help="Daphne workers (default 3): w0 holds the streams and is killed")
    add("--connections", type=int, default=10_000, help="SSE streams, all on w0 (default 10,000)")
    add("--topic", default="bench.storm", help="the broadcast topic (open namespace `bench`)")
    add("--rate", type=float, default=20.0, help="events/s published to the topic through w1 (default 20)")
    add("--before-kill", type=float, default=5.0, help="seconds of publishing before the SIGKILL (default 5)")
    add("--after-kill", type=float, default=20.0, help="seconds of publishing after it (default 20)")
    add("--jitter", default="0.5,3", help="reconnect delay, uniform within LOW,HIGH seconds (default 0.5,3)")
    add("--resume", choices=("header", "query"), default="header", help="Last-Event-ID (default) or ?since=")
    add("--max-attempts", type=int, default=5, help="reconnect attempts per client (default 5)")
    add("--reconnect-timeout", type=float, default=30.0, help="per attempt, until 'connected' (default 30 s)")
    add("--resume-limit", type=float, default=60.0, help="max seconds after the kill to wait for every resume")
    add("--publish-concurrency", type=int, default=8, help="keep-alive publisher connections to w1 (default 8)")
    add("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    add("--drain", type=float, default=20.0, help="max seconds to wait for deliveries after the last publish")
    add("--settle", type=float, default=2.0, help="seconds after connecting before publishing")
    add("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    add("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    add("--connect-concurrency", type=int, default=100, help="streams being opened at once (first connect)")
    add("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected' (first connect)")
    add("--seed", type=int, default=12, help="seed of the jitter and of the survivor picked")
    add("--worker-env", action="append", default=[], metavar="NAME=VALUE", help="a worker setting (repeatable)")
    add(
        "--backlog",
        type=int,
        default=0,
        help="what-if: workers listen with this accept queue (`daphne -e tcp:...:backlog=N`; default: Daphne's, "
        "which is Twisted's 50)",
    )
    h.add_common_options(parser, "storm-w<W>-c<N>", 600.0)
    args = parser.parse_args(argv)
    try:
        args.jitter = tuple(float(value) for value in args.jitter.split(","))
        low, high = args.jitter
    except ValueError:
        parser.error("--jitter is LOW,HIGH seconds")
    if not 0 <= low <= high:
        parser.error("--jitter needs 0 <= LOW <= HIGH")
    if args.workers < 2 or args.connections < 1 or args.rate <= 0 or args.before_kill <= 0 or args.after_kill <= 0:
        parser.error("--workers >= 2; --connections, --rate, --before-kill, --after-kill positive")
    if args.max_attempts < 1:
        parser.error("--max-attempts >= 1")
    if any("=" not in item for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    h.streams_and_sources(parser, args, args.connections, 1)
    args.name = args.name or f"storm-w{args.workers}-c{args.connections}"
    return args


class Storm(h.Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefix="bench-storm-")
        self.total_events = int(args.rate * (args.before_kill + args.after_kill))
        self.ids: list[str | None] = [None] * self.total_events

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        overrides = dict(item.split("=", 1) for item in args.worker_env)
        env = self.site_env(self.start_redis(), **overrides)
        await self.prepare_site(env)
        self.start_workers(args.workers, env, backlog=args.backlog)
        await self.warm_up(streams=True)
        holder, survivors = self.workers[0], self.workers[1:]
        publisher = survivors[0]
        report["workers"] = {
            worker.name: {"port": worker.port, "pid": worker.pid, "listen_backlog": listen_backlog(worker.port)}
            for worker in self.workers
        }
        shares = self.spread([holder], args.connections, args.clients, args.sources)
        config = {"client_class": StormClient, "topic": args.topic, "seed": args.seed, "jitter": args.jitter}
        config |= {"reconnect_ports": [worker.port for worker in survivors], "resume": args.resume}
        config |= {"max_attempts": args.max_attempts, "reconnect_timeout": args.reconnect_timeout}
        config |= {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        request = self.stream_request([args.topic])
        report["connect"], samples = await self.open_streams(shares, request, **config)
        held = report["connect"]["held"]
        report["stats_connected"] = await self.stats()
        await self.ask_all(("expect", self.total_events), 60)

        padding = {"pad": "x" * args.payload_bytes} if args.payload_bytes else {}

        async def send(seq: int, connection: h.HttpConnection) -> int:
            path, body = self.publish_request(args.topic, {"seq": seq, "sent_at": time.time(), **padding})
            status, answer = await connection.request("POST", path, body, timeout=10)
            if status == 202:
                self.ids[seq] = answer["ids"][0]
            return status

        connections = [self.http(publisher) for _ in range(args.publish_concurrency)]
        print(f"publishing {self.total_events} events at {args.rate:g}/s through {publisher.name} ...", file=sys.stderr)
        publishing = asyncio.create_task(self.send_paced(self.total_events, args.rate, connections, send))
        try:
            await asyncio.sleep(args.before_kill + 0.05)
            samples["before_kill"] = self.snapshot()
            kernel = {"before_kill": {"tcp": tcp_counters(), "softirq_s": softirq_seconds()}}
            report["stats_before_kill"] = await self.stats()
            report["uptime_kill"] = h.uptime()
            print(f"SIGKILL {holder.name} (pid {holder.pid}) ...", file=sys.stderr)
            kill_at = time.time()
            os.kill(holder.pid, signal.SIGKILL)
            await asyncio.to_thread(holder.process.wait, 10)
            self.workers.remove(holder)
            self.killed = holder
            report["kill_at"] = kill_at
            report["timeline"] = timeline = []
            while True:
                statuses = await self.ask_all(("status",), 30)
                row = {"t": round(time.time() - kill_at, 2)}
                for key in ("open", "down", "reconnected", "resumed", "received", "given_up"):
                    row[key] = sum(status.get(key, 0) for status in statuses)
                timeline.append(row)
                if row["resumed"] + row["given_up"] >= held or time.time() - kill_at > args.resume_limit:
                    break
                self.check_alive()
                await asyncio.sleep(min(0.2, self.remaining()))
            samples["resumed"] = self.snapshot()
            kernel["resumed"] = {"tcp": tcp_counters(), "softirq_s": softirq_seconds()}
            report["stats_resumed"] = await self.stats()
            report["publish"] = published = await asyncio.wait_for(publishing, self.remaining())
        finally:
            publishing.cancel()
        accepted = bytes(1 if self.ids[seq] else 0 for seq in range(self.total_events))
        expected = held * sum(accepted)
        done = lambda statuses: sum(s["received"] for s in statuses) >= expected  # noqa: E731
        report["drain"] = await self.drain(done, args.drain)
        samples["drained"] = self.snapshot()
        kernel["drained"] = {"tcp": tcp_counters(), "softirq_s": softirq_seconds()}
        report["kernel"] = kernel
        report["kernel_deltas"] = {
            f"{start}->{end}": {
                "softirq_s": round(kernel[end]["softirq_s"] - kernel[start]["softirq_s"], 2),
                **{name: kernel[end]["tcp"][name] - kernel[start]["tcp"][name] for name in TCP_COUNTERS},
            }
            for start, end in (("before_kill", "resumed"), ("resumed", "drained"))
        }
        report["stats_end"] = await self.stats()
        self.finish()
        if problems := self.killed.log_problems():
            self.report["log_problems"][self.killed.name] = problems[-20:]
        results = await self.ask_all(("verify", accepted), 120)
        report["cpu"] = {
            "before_kill": h.cpu_deltas(samples["after_connect"], samples["before_kill"]),
            "storm": h.cpu_deltas(samples["before_kill"], samples["resumed"]),
            "after": h.cpu_deltas(samples["resumed"], samples["drained"]),
        }
        report["memory"] = {
            phase: {
                name: {k: v for k, v in reading.items() if k in ("rss_kb", "fds")}
                for name, reading in samples[phase].items()
                if name != "machine"
            }
            for phase in ("after_connect", "before_kill", "resumed", "drained")
        }
        report["result"] = self.evaluate(results, accepted, kill_at, published)
        report["exit_status"] = 0 if report["result"]["targets_met"] else 2
        return report

    def evaluate(
        self, results: list[dict[str, Any]], accepted: bytes, kill_at: float, published: dict[str, Any]
    ) -> dict[str, Any]:
        per: dict[str, list[float]] = {key: [] for key in (*PER_STREAM_D, *PER_STREAM_I)}
        for result in results:
            for key in PER_STREAM_D:
                per[key].extend(array("d", result[key]))
            for key in PER_STREAM_I:
                per[key].extend(array("i", result[key]))
        streams = len(per["lost"])
        # The JSON ids the clients saw against the ids the publisher's POSTs were answered 202 with.
        mismatched = unknown = 0
        for result in results:
            for seq, seen_id in enumerate(result["json_ids"]):
                if seen_id is None:
                    continue
                if self.ids[seq] is None:
                    unknown += 1
                elif seen_id != self.ids[seq]:
                    mismatched += 1
        since = lambda key: [v - kill_at for v in per[key] if v]  # noqa: E731
        resumed = since("resumed_at")
        reconnected = since("conn_at")
        pairs = lambda a, b: [y - x for x, y in zip(per[a], per[b], strict=True) if x and y]  # noqa: E731
        all_resumed = max(resumed) if len(resumed) == streams else None
        lost_streams = [n for n in per["lost"] if n]
        dup_streams = [n for n in per["dups"] if n]
        result = {"streams": streams, "accepted": sum(accepted), "ids_mismatched": mismatched}
        result["ids_received_not_accepted"] = unknown
        result |= {"reconnected": len(reconnected), "resumed": len(resumed), "all_resumed_s": all_resumed}
        result["time_to_lost_s"] = h.percentiles(since("lost_at"))
        result["jitter_s"] = h.percentiles(pairs("lost_at", "due_at"))
        # The load client's own lateness: its loop is busy too (a retried client: from its first due time).
        result["client_late_s"] = h.percentiles(pairs("due_at", "req_at"))
        result["request_to_tcp_s"] = h.percentiles(pairs("req_at", "tcp_at"))
        result["request_to_connected_s"] = h.percentiles(pairs("req_at", "conn_at"))
        result["request_to_first_event_s"] = h.percentiles(pairs("req_at", "first_at"))
        result["request_to_resumed_s"] = h.percentiles(pairs("req_at", "resumed_at"))
        result["kill_to_connected_s"] = h.percentiles(reconnected)
        result["kill_to_resumed_s"] = h.percentiles(resumed)
        result |= {"lost_events": sum(per["lost"]), "streams_with_loss": len(lost_streams)}
        result["lost_per_stream_max"] = max(per["lost"], default=0)
        result["lost_per_stream"] = dict(Counter(per["lost"]).most_common(10))
        result |= {"duplicated_events": sum(per["dups"]), "streams_with_duplicates": len(dup_streams)}
        result["duplicates_per_stream_max"] = max(per["dups"], default=0)
        result["extra_events"] = sum(per["extra"])
        result |= {"gap_frames": sum(per["gaps"]), "out_of_order": sum(per["disorder"])}
        result |= {"attempts": dict(Counter(per["attempts"])), "drops": dict(Counter(per["drops"]))}
        result["survivor_ports"] = dict(Counter(per["port"]))
        errors: Counter[str] = Counter()
        controls: Counter[str] = Counter()
        for client in results:
            errors.update(client["errors_reconnect"])
            controls.update(client["controls"])
        result |= {"reconnect_errors": dict(errors), "control_frames": dict(controls)}
        result["gap_samples"] = [sample for client in results for sample in client["gap_samples"]][:5]
        keys = ("given_up", "id_conflicts", "unknown", "resets", "other_frames", "open", "max_rss_kb", "cpu_s")
        result["clients"] = [{key: client[key] for key in keys} for client in results]
        # Per event: first and last delivery after it was sent (all streams), before the kill and after.
        events, sent_at = range(self.total_events), published["sent_at"]

        def merged(key: str, kind: str) -> list[float]:
            columns = [array(kind, client[key]) for client in results]
            combine = sum if kind == "i" else max
            return [combine(column[seq] for column in columns) for seq in events]

        counts = [sum(client["counts"][seq] for client in results) for seq in events]
        result["events_complete"] = sum(1 for seq in events if accepted[seq] and counts[seq] >= streams)
        # Live fan-out: events every stream got on its first connection (before the kill), and events sent after
        # every stream had resumed, which every stream got live on its survivor.
        orig_counts, orig_last = merged("orig_counts", "i"), merged("orig_last", "d")
        live_counts, live_last = merged("live_counts", "i"), merged("live_last", "d")
        before = [orig_last[seq] - sent_at[seq] for seq in events if accepted[seq] and orig_counts[seq] >= streams]
        settled = kill_at + all_resumed if all_resumed is not None else float("inf")
        after = [
            live_last[seq] - sent_at[seq]
            for seq in events
            if accepted[seq] and sent_at[seq] > settled and live_counts[seq] >= streams
        ]
        result["completion_before_kill_s"], result["events_live_before_kill"] = h.percentiles(before), len(before)
        result["completion_after_resume_s"], result["events_live_after_resume"] = h.percentiles(after), len(after)
        result["events_sent_after_resume"] = sum(1 for seq in events if accepted[seq] and sent_at[seq] > settled)
        result["tail_resumed"] = sum(per["tail_resumed"])
        met = all_resumed is not None and all_resumed < 10.0
        result["targets"] = {"all_resumed_under_10_s": met, "no_loss": result["lost_events"] == 0}
        result["targets"]["no_duplicates"] = result["duplicated_events"] == 0 and mismatched == 0
        result["targets_met"] = all(result["targets"].values())
        return result


def stat_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {key: values.get(key, 0) - before.get(name, {}).get(key, 0) for key in STATS if key != "connections"}
        | {"connections": values.get("connections")}
        for name, values in after.items()
    }


def render(report: dict[str, Any]) -> str:
    args, res, cores = report["config"], report["result"], report["machine"]["nproc"]
    conn, pub = report["connect"], report["publish"]
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; at the kill: `{report['uptime_kill']}`; after: "
        f"`{report['uptime_end']}`. Code: {h.code_label(report)}. Date: {report['date']}.",
        "",
        f"{conn['held']:,} of {conn['requested']:,} streams held on w0 (errors: {conn['errors'] or 'none'}; "
        f"{h.num(conn['rate_per_s'])}/s), topic `{args['topic']}`; {args['workers']} workers on one redis-server. "
        f"{pub['accepted']:,} of {pub['events']:,} events accepted ({pub['statuses']}) at "
        f"{h.num(pub['rate_achieved'], 1)}/s through w1 ({args['publish_concurrency']} connections); SIGKILL of w0 "
        f"{args['before_kill']:g} s in; reconnect after uniform {args['jitter'][0]:g}-{args['jitter'][1]:g} s to a "
        f"random survivor with {'Last-Event-ID' if args['resume'] == 'header' else '?since='}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| streams reconnected / resumed | {res['reconnected']:,} / {res['resumed']:,} of {res['streams']:,} |",
        f"| **kill -> all resumed** | **{h.num(res['all_resumed_s'], 2)} s** (target < 10 s) |",
        f"| kill -> resumed, per stream (ms) | {h.pct(res['kill_to_resumed_s'])} |",
        f"| kill -> `connected` on a survivor (ms) | {h.pct(res['kill_to_connected_s'])} |",
        f"| kill -> connection seen closed (ms) | {h.pct(res['time_to_lost_s'])} |",
        f"| jittered delay drawn (ms) | {h.pct(res['jitter_s'])} |",
        f"| the load client late on it (its own loop busy; a retry counts from the first) (ms) | "
        f"{h.pct(res['client_late_s'])} |",
        f"| reconnect request -> TCP connected (ms) | {h.pct(res['request_to_tcp_s'])} |",
        f"| reconnect request -> `connected` (ms) | {h.pct(res['request_to_connected_s'])} |",
        f"| reconnect request -> first event (ms) | {h.pct(res['request_to_first_event_s'])} |",
        f"| reconnect request -> resumed (ms) | {h.pct(res['request_to_resumed_s'])} |",
        f"| **events lost** | **{res['lost_events']:,}** in {res['streams_with_loss']:,} streams (max "
        f"{res['lost_per_stream_max']:,} per stream; per-stream counts {res['lost_per_stream']}) |",
        f"| **events duplicated** | **{res['duplicated_events']:,}** in {res['streams_with_duplicates']:,} streams "
        f"(max {res['duplicates_per_stream_max']:,}) |",
        f"| JSON ids vs 202 answers | {res['ids_mismatched']:,} mismatched, {res['ids_received_not_accepted']:,} "
        f"received but not answered 202; {res['extra_events']:,} extra deliveries |",
        f"| `gap` frames / out of offset order | {res['gap_frames']:,} / {res['out_of_order']:,} |",
        f"| attempts per client / drops | {res['attempts']} / {res['drops']} |",
        f"| reconnect errors | {res['reconnect_errors'] or 'none'} |",
        f"| survivor picked (port: streams) | {res['survivor_ports']} |",
        f"| live fan-out before the kill, POST sent -> last stream (ms) | {h.pct(res['completion_before_kill_s'])} "
        f"({res['events_live_before_kill']:,} events every stream got before the kill) |",
        f"| live fan-out once all resumed, on the survivors (ms) | {h.pct(res['completion_after_resume_s'])} "
        f"({res['events_live_after_resume']:,} of the {res['events_sent_after_resume']:,} events sent then) |",
        f"| publish POSTs to w1 (ms) | {h.pct(pub['post_latency_s'])} |",
        f"| events every stream received in the end | {res['events_complete']:,} of {res['accepted']:,} |",
        f"| streams resumed only by their replay (no event published after their reconnect) | "
        f"{res['tail_resumed']:,} |",
        f"| listen backlog of the survivors (`ss -ltn` Send-Q) | "
        f"{ {name: w['listen_backlog'] for name, w in report['workers'].items()} } |",
        f"| targets | {res['targets']} |",
        "",
        "Survivors' /realtime/stats, kill -> all resumed (and kill -> end):",
        "",
        "| worker | " + " | ".join(STATS) + " |",
        "| --- |" + " ---: |" * len(STATS),
    ]
    storm = stat_deltas(report["stats_before_kill"], report["stats_resumed"])
    end = stat_deltas(report["stats_before_kill"], report["stats_end"])
    for name in storm:
        cells = [f"{storm[name][key]:,} ({end[name][key]:,})" for key in STATS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Kernel (machine-wide): " + "; ".join(f"{span}: {values}" for span, values in report["kernel_deltas"].items()),
    ]
    lines += ["", "CPU (seconds, per process):", ""]
    lines += [f"- {phase}: {h.cpu_line(values, cores)}" for phase, values in report["cpu"].items()]
    lines += ["", "Timeline (s after the kill: down / reconnected / resumed):", ""]
    marks, shown = report["timeline"], []
    for row in marks[:: max(1, len(marks) // 25)] + marks[-1:]:
        shown.append(f"{row['t']:.1f}: {row['down']:,}/{row['reconnected']:,}/{row['resumed']:,}")
    lines.append(", ".join(shown))
    if res["gap_samples"]:
        lines += ["", f"control frames {res['control_frames']}; first: {res['gap_samples'][:2]}"]
    lines += ["", f"clients: {res['clients']}"]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:3000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Storm, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
