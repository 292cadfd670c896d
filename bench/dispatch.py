"""Dispatcher throughput: many topics, every publish through ONE worker, at rising rates; what gets through.

    .venv/bin/python -m bench.dispatch                                      # 1k, 2k, 5k, 8k events/s, 10 s each
    .venv/bin/python -m bench.dispatch --rates 500,1000 --step-secs 5 --connections 1000   # a quick look
    .venv/bin/python -m bench.dispatch --batch 1 --publish-concurrency 64   # many concurrent single POSTs
    .venv/bin/python -m bench.dispatch --profile-rates 5000                 # py-spy on the dispatcher at 5k/s
    .venv/bin/python -m bench.dispatch --areas bench/results/<file>.pyspy.txt   # where a profile's samples go

Starts its own redis-server and 1 + W workers (`python -m livesite.serve ...`, as bench/procs.py does): `d0`,
the dispatcher, takes every `POST /api/publish` and holds no stream; `w0`..`w<W-1>` hold the N streams
(round-robin). Stream i reads its own topic `bench.own.<i>` and K of S shared topics `bench.shared.<j>` (a fixed
pseudo-random choice), so an own-topic event is hosted by one worker and a shared one by up to W.

For each rate of the ladder it publishes rate x --step-secs events through d0 as batches (`{"events": [...]}`
of --batch events, spread over topics: a fraction --shared-fraction goes to shared topics, the rest to own
topics round-robin), paced open-loop over --publish-concurrency keep-alive connections. If d0 cannot keep up,
the connections are all busy and sending falls behind; batches still unsent at 1.5 x --step-secs are not sent
(reported). Then it waits until every accepted event has reached every subscriber (or --drain seconds) and
reads the workers' /realtime/stats. Per rate it reports: events/s accepted (202) and delivered, publish-to-
receive latency (POST sent -> the event's last delivery, and `published_at` -> last delivery), losses, CPU per
process, and the channel-layer messages per publish: `dispatch_published` and `dispatch_group_sends` on d0
(or `dispatch_worker_messages` where the core sends one message per worker and round), `received_messages` /
`received_events` on the receivers. A channel-layer message may carry several events (group commit), so
messages per event must be at most the number of workers hosting the event's topic (the bound is computed
from the subscriptions), and received_events must equal that bound exactly (each hosting worker gets each
event once).

Load client: bench/loadclient.py's client with one request per stream (its own topics), see `TopicClient`.
Bounded: every step by its own limits, the whole run by --timeout. Prints Markdown tables and writes JSON
(and py-spy profiles) to bench/results/.
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import socket
import subprocess
import sys
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import idle, loadclient, procs, pyspy
from bench.httpmini import HttpConnection, HttpError
from bench.idle import EVENT_TYPE, BenchError, Harness, cpu_deltas, cpu_line, ms, percentiles

RESULTS = Path(__file__).resolve().parent / "results"
OWN = "bench.own.{}"
SHARED = "bench.shared.{}"
COUNTERS_W = ("received_messages", "received_events", "stray_events", "delivered", "overflow_closed")


# -- the load client: bench/loadclient.py with one request (its own topics) per stream -------------
#
# loadclient.Client sends the same request on every stream of a process. Rather than change that module
# (another engineer is editing it), this subclass takes targets (port, source, request) and is swapped in
# only inside its own client processes (`client_main`).


class TopicStream(loadclient.Stream):
    __slots__ = ("request",)

    def __init__(self, client: loadclient.Client, ready: asyncio.Future, request: bytes) -> None:
        super().__init__(client, ready)
        self.request = request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]


class _BoundedCache(dict):
    """loadclient caches each chunk's parse by its bytes: right for broadcasts, unbounded for one-stream topics."""

    LIMIT = 20_000

    def __setitem__(self, key: bytes, value: Any) -> None:
        if len(self) >= self.LIMIT:
            self.clear()
        super().__setitem__(key, value)


class TopicClient(loadclient.Client):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.cache = _BoundedCache()

    async def open_all(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.config["concurrency"])
        started = time.time()
        await asyncio.gather(*(self._open_one(port, source, request, gate) for port, source, request in self.targets))
        ended = time.time()
        return {
            "held": self.open_streams,
            "failed": len(self.targets) - self.open_streams,
            "errors": dict(self.errors),
            "started": started,
            "ended": ended,
            "connect_secs": self.connect_secs.tobytes(),
        }

    @property
    def targets(self) -> list[tuple[int, str, bytes]]:
        return self.config["targets"]

    async def _open_one(self, port: int, source: str, request: bytes, gate: asyncio.Semaphore) -> None:
        # As loadclient.Client._open, with this stream's own request.
        loop = asyncio.get_running_loop()
        timeout = self.config["connect_timeout"]
        async with gate:
            if time.time() > self.config["deadline"]:
                self.errors["deadline"] += 1
                return
            started = time.time()
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            transport = None
            try:
                sock.setsockopt(socket.IPPROTO_IP, loadclient.IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source, 0))
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
                ready = loop.create_future()
                stream = TopicStream(self, ready, request)
                transport, _ = await loop.create_connection(lambda: stream, sock=sock)
                connected_at = await asyncio.wait_for(ready, timeout)
            except (OSError, TimeoutError, ConnectionError) as exc:
                self.errors[loadclient._describe(exc)] += 1
                if transport is not None:
                    transport.close()
                else:
                    sock.close()
                return
            stream.ready = None
            self.streams.append(stream)
            self.open_streams += 1
            self.connect_secs.append(connected_at - started)

    def result(self) -> dict[str, Any]:
        return {**super().result(), "published_at": self.published_at.tobytes()}


def client_main(pipe: Any, config: dict[str, Any]) -> None:
    """Entry point of a client process: loadclient's, with TopicClient (this process only)."""
    loadclient.Client = TopicClient  # type: ignore[misc]
    loadclient.main(pipe, config)


# -- the plan: who reads what, and where each event goes -------------------------------------------


class Plan:
    """Subscriptions and event topics, all derived from the arguments (the same in every run)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.connections = args.connections
        self.workers = args.workers
        self.shared_topics = args.shared_topics
        chooser = random.Random(7)
        self.shared_of = [
            chooser.sample(range(args.shared_topics), args.shared_per_connection) for _ in range(args.connections)
        ]
        subscribers = [0] * args.shared_topics
        hosts: list[set[int]] = [set() for _ in range(args.shared_topics)]
        for index, chosen in enumerate(self.shared_of):
            for topic in chosen:
                subscribers[topic] += 1
                hosts[topic].add(index % args.workers)
        self.shared_subscribers = subscribers
        self.shared_hosts = [len(workers) for workers in hosts]
        self.period = round(1 / args.shared_fraction) if args.shared_fraction > 0 else 0

    def worker_of(self, connection: int) -> int:
        return connection % self.workers

    def topics_of(self, connection: int) -> list[str]:
        return [OWN.format(connection), *(SHARED.format(topic) for topic in self.shared_of[connection])]

    def target(self, seq: int) -> int:
        """The topic of event `seq`: 0..N-1 an own topic (round-robin), N.. a shared one."""
        if self.period and seq % self.period == self.period - 1:
            return self.connections + (seq // self.period) % self.shared_topics
        return seq % self.connections

    def name(self, target: int) -> str:
        if target < self.connections:
            return OWN.format(target)
        return SHARED.format(target - self.connections)

    def subscribers(self, target: int) -> int:
        return 1 if target < self.connections else self.shared_subscribers[target - self.connections]

    def hosts(self, target: int) -> int:
        """Workers hosting subscribers of the topic: the most channel-layer messages one event may cost."""
        return 1 if target < self.connections else self.shared_hosts[target - self.connections]


# -- the run -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="workers holding streams (default 2), besides d0")
    parser.add_argument("--connections", type=int, default=4000, help="streams, one own topic each (default 4000)")
    parser.add_argument("--shared-topics", type=int, default=40, help="shared topics (default 40)")
    parser.add_argument("--shared-per-connection", type=int, default=2, help="shared topics per stream (default 2)")
    parser.add_argument(
        "--shared-fraction", type=float, default=0.01, help="share of events sent to shared topics (default 0.01)"
    )
    parser.add_argument("--rates", default="1000,2000,5000,8000", help="events/s of each step (default 1k,2k,5k,8k)")
    parser.add_argument("--step-secs", type=float, default=10.0, help="seconds of publishing per step (default 10)")
    parser.add_argument("--batch", type=int, default=100, help="events per POST (default 100; 1 = single form)")
    parser.add_argument("--publish-concurrency", type=int, default=8, help="keep-alive POST connections to d0")
    parser.add_argument("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    parser.add_argument("--max-lag", type=float, default=1.5, help="stop sending a step at this x --step-secs")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for a step's deliveries")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between steps")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    parser.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after connecting before publishing")
    parser.add_argument("--profile-rates", default="", help="py-spy record d0 during the steps at these rates")
    parser.add_argument("--profile-receivers", action="store_true", help="also py-spy the receiving workers")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames; pauses d0)")
    parser.add_argument(
        "--profile-all-samples",
        action="store_true",
        help="count every active sample, not only the GIL holder's (py-spy without --gil)",
    )
    parser.add_argument("--timeout", type=float, default=540.0, help="bound of the whole run, seconds (default 540)")
    parser.add_argument("--name", default="", help="results name (default dispatch-w<W>-c<N>-b<B>)")
    parser.add_argument("--rev", default="", help="run the site as committed at this git revision (default: tree)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in the client")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, database)")
    parser.add_argument(
        "--areas", nargs="+", type=Path, default=[], help="only print where the samples of these raw py-spy files go"
    )
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
        args.profile_rates = [float(rate) for rate in args.profile_rates.split(",") if rate.strip()]
    except ValueError:
        parser.error("--rates and --profile-rates are comma-separated numbers")
    if not args.rates or min(args.rates) <= 0 or args.step_secs <= 0:
        parser.error("--rates must be positive numbers and --step-secs positive")
    if args.workers < 1 or args.connections < 1 or not 1 <= args.batch <= 500:
        parser.error("--workers and --connections must be positive, --batch within 1..500 (the API's limit)")
    if not 0 <= args.shared_fraction < 1 or not 0 <= args.shared_per_connection <= args.shared_topics:
        parser.error("--shared-fraction must be in [0, 1), --shared-per-connection at most --shared-topics")
    if args.shared_fraction > 0 and args.shared_per_connection == 0:
        parser.error("events to shared topics need subscribers: --shared-per-connection >= 1")
    if math.ceil(args.connections / args.workers) > idle.MAX_STREAMS_PER_PROCESS:
        parser.error("too many streams per worker (20,000 open files): raise --workers")
    args.clients = args.clients or math.ceil(args.connections / idle.MAX_STREAMS_PER_PROCESS)
    needed = math.ceil(args.connections / args.workers / idle.MAX_STREAMS_PER_SOURCE_AND_WORKER)
    args.sources = args.sources or needed
    if not needed <= args.sources <= 254:
        parser.error(f"--sources must be within {needed}..254")
    args.name = args.name or f"dispatch-w{args.workers}-c{args.connections}-b{args.batch}"
    return args


def render_areas(areas: dict[str, Any]) -> str:
    lines = [
        f"| area ({areas['samples']} samples, all threads) | share |",
        "| --- | ---: |",
    ]
    lines += [f"| {area} | {share * 100:.1f} % |" for area, _, share in areas["areas"]]
    return "\n".join(lines)


class DispatchRun(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(timeout=args.timeout, rev=args.rev, keep_tmp=args.keep_tmp, prefix="bench-dispatch-")
        self.args = args
        self.plan = Plan(args)
        self.total_events = sum(int(rate * args.step_secs) for rate in args.rates)
        self.sent_at = array("d", bytes(8 * self.total_events))
        self.accepted = bytearray(self.total_events)
        self.profilers: list[Any] = []
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")

    @property
    def dispatcher(self) -> procs.Managed:
        return self.workers[0]

    @property
    def receivers(self) -> list[procs.Managed]:
        return self.workers[1:]

    def shares(self) -> list[list[tuple[int, str, bytes]]]:
        args = self.args
        sources = [f"127.0.0.{index + 1}" for index in range(args.sources)]
        shares: list[list[tuple[int, str, bytes]]] = [[] for _ in range(args.clients)]
        for index in range(args.connections):
            worker = self.receivers[self.plan.worker_of(index)]
            lap = index // args.workers
            request = idle.stream_request(self.plan.topics_of(index))
            shares[lap % args.clients].append((worker.port, sources[lap % len(sources)], request))
        return shares

    async def redis_commands(self) -> dict[str, dict[str, float]]:
        """Redis's INFO commandstats: calls and microseconds per command so far."""
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=self.redis.port)
        try:
            stats = await asyncio.wait_for(client.info("commandstats"), self.remaining(10))
        finally:
            await client.aclose()
        return {
            name.removeprefix("cmdstat_"): {"calls": float(value["calls"]), "usec": float(value["usec"])}
            for name, value in stats.items()
        }

    # -- publishing -------------------------------------------------------------------------------

    def batch_body(self, seqs: range, now: float, padding: str) -> dict[str, Any]:
        plan = self.plan
        events = []
        for seq in seqs:
            data: dict[str, Any] = {"seq": seq, "sent_at": now}
            if padding:
                data["pad"] = padding
            events.append({"topic": plan.name(plan.target(seq)), "type": EVENT_TYPE, "data": data})
        return events[0] if self.args.batch == 1 else {"events": events}

    async def publish_step(self, rate: float, first_seq: int, count: int) -> dict[str, Any]:
        """Send `count` events from `first_seq` at `rate` events/s through d0; wait for every answer."""
        args = self.args
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        connections = [self.http(self.dispatcher) for _ in range(max(1, args.publish_concurrency))]
        for connection in connections:
            pool.put_nowait(connection)
        statuses: Counter[str] = Counter()
        post_secs = array("d")
        answered = array("d")
        padding = "x" * args.payload_bytes

        async def post(seqs: range, connection: HttpConnection) -> None:
            now = time.time()
            for seq in seqs:
                self.sent_at[seq] = now
            try:
                body = self.batch_body(seqs, now, padding)
                status, _ = await connection.request("POST", "/api/publish", body, timeout=30)
                statuses[str(status)] += len(seqs)
                if status == 202:
                    for seq in seqs:
                        self.accepted[seq] = 1
            except (HttpError, OSError, TimeoutError) as exc:
                statuses[type(exc).__name__] += len(seqs)
            finally:
                ended = time.time()
                post_secs.append(ended - now)
                answered.append(ended)
                pool.put_nowait(connection)

        tasks = []
        sent = 0
        start = loop.time() + 0.05
        give_up = start + args.step_secs * args.max_lag
        first_sent = time.time() + 0.05
        try:
            for offset in range(0, count, args.batch):
                due = start + offset / rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, self.remaining()))
                try:
                    connection = await asyncio.wait_for(pool.get(), max(0.0, give_up - loop.time()))
                except TimeoutError:
                    break
                if loop.time() > give_up:
                    pool.put_nowait(connection)
                    break
                seqs = range(first_seq + offset, first_seq + min(count, offset + args.batch))
                sent += len(seqs)
                tasks.append(asyncio.create_task(post(seqs, connection)))
            send_ended = time.time()
            if tasks:
                await asyncio.wait_for(asyncio.gather(*tasks), self.remaining(60))
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                connection.close()
        accepted = statuses.get("202", 0)
        last_answer = max(answered) if answered else first_sent
        return {
            "rate_target": rate,
            "events": count,
            "sent": sent,
            "not_sent": count - sent,
            "accepted": accepted,
            "statuses": dict(statuses),
            "first_sent": first_sent,
            "send_secs": send_ended - first_sent,
            "last_answer": last_answer,
            # Over the step's length at least: batches are sent at intervals, the last one before the step ends.
            "accepted_per_s": accepted / max(args.step_secs, last_answer - first_sent),
            "post_latency_s": percentiles(post_secs, (50, 90, 99)),
            "posts": len(post_secs),
        }

    async def drain(self, expected: int) -> dict[str, Any]:
        """Poll the clients until `expected` deliveries in all arrived, or --drain seconds passed."""
        started = time.monotonic()
        limit = started + self.args.drain
        while True:
            replies = await self.ask_all(("status",), 30)
            received = sum(reply[1]["received"] for reply in replies)
            if received >= expected or time.monotonic() > limit:
                return {"received": received, "expected": expected, "waited_s": time.monotonic() - started}
            await asyncio.sleep(min(0.1, self.remaining()))

    def start_profilers(self, rate: float) -> list[dict[str, Any]]:
        if pyspy.binary() is None:
            print("py-spy is not installed: no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
            return []
        outputs = []
        targets = [self.dispatcher, *(self.receivers if self.args.profile_receivers else [])]
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        duration = max(1, int(self.args.step_secs))
        for worker in targets:
            out = (
                self.args.results_dir / f"{self.args.name}-{self.stamp}-r{rate:g}-{worker.name}-{worker.pid}.pyspy.txt"
            )
            process = start_pyspy(
                worker.pid, out, duration, native=self.args.profile_native, gil=not self.args.profile_all_samples
            )
            if process is not None:
                self.profilers.append(process)
                outputs.append({"worker": worker.name, "path": out, "process": process})
        return outputs

    async def finish_profilers(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        summaries = []
        for output in outputs:
            process = output["process"]
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), self.remaining(self.args.step_secs + 30))
            except TimeoutError:
                process.kill()
            error = process.stderr.read().decode(errors="replace")[-500:] if process.stderr else ""
            path = output["path"]
            if process.returncode == 0 and path.exists():
                summaries.append(
                    {
                        "worker": output["worker"],
                        "path": str(path),
                        "main_thread": pyspy.summarise(path, 25),
                        "all_threads": pyspy.summarise(path, 25, main_thread_only=False),
                        "areas": profile_areas(path),
                    }
                )
            else:
                summaries.append({"worker": output["worker"], "error": f"py-spy exited {process.returncode}: {error}"})
        return summaries

    def cleanup(self) -> None:
        """Profilers first (by PID), then everything the harness started."""
        for process in self.profilers:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(Exception):
                    process.wait(timeout=10)
        super().cleanup()

    # -- phases -----------------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        args = self.args
        report: dict[str, Any] = {
            "stamp": self.stamp,
            "machine": idle.machine(),
            "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "uptime_start": idle.uptime(),
            "loadavg_start": os.getloadavg(),
        }
        names = ["d0", *(f"w{index}" for index in range(args.workers))]
        await self.start_servers(args.workers + 1, names)
        report["code"] = {"commit": report["machine"]["git_commit"], **self.code}
        report["plan"] = {
            "topics": args.connections + args.shared_topics,
            "shared_subscribers": self.plan.shared_subscribers,
            "shared_hosts": self.plan.shared_hosts,
        }
        # Warm-up: every worker starts its realtime Worker; d0 serves the publish path (batch and single).
        for worker in self.receivers:
            await self.touch_stream(worker, "bench.warmup")
        warm = {"topic": "bench.warmup", "type": EVENT_TYPE, "data": {"seq": -1, "sent_at": 0}}
        for _ in range(3):
            await self.publish(self.dispatcher, warm)
            await self.publish(self.dispatcher, {"events": [warm] * 10})
        await self.stats()

        self.start_clients(
            self.shares(),
            request=b"",
            concurrency=args.connect_concurrency,
            connect_timeout=args.connect_timeout,
            uvloop=not args.no_uvloop,
            target=client_main,
        )
        await self.wait_ready()
        print(f"opening {args.connections:,} streams over {args.workers} workers ...", file=sys.stderr)
        results = await self.connect(self.remaining(args.connect_timeout + args.connections / 50))
        held = sum(result["held"] for result in results)
        report["connect"] = {
            "requested": args.connections,
            "held": held,
            "errors": dict(sum((Counter(result["errors"]) for result in results), Counter())),
            "wall_s": max(r["ended"] for r in results) - min(r["started"] for r in results),
        }
        if held == 0:
            raise BenchError(f"no stream connected: {report['connect']['errors']}")
        await asyncio.sleep(args.settle)
        self.check_alive()
        report["stats_connected"] = await self.stats()
        await self.ask_all(("expect", self.total_events), 60)

        steps = []
        first_seq = 0
        expected_total = 0
        for rate in args.rates:
            count = int(rate * args.step_secs)
            print(f"step: {rate:g} events/s for {args.step_secs:g} s ({count:,} events) ...", file=sys.stderr)
            profiles = self.start_profilers(rate) if rate in args.profile_rates else []
            stats_before = await self.stats()
            redis_before = await self.redis_commands()
            before = self.snapshot()
            published = await self.publish_step(rate, first_seq, count)
            expected_total += sum(
                self.plan.subscribers(self.plan.target(seq))
                for seq in range(first_seq, first_seq + count)
                if self.accepted[seq]
            )
            published["drain"] = await self.drain(expected_total)
            after = self.snapshot()
            await asyncio.sleep(0.3)
            stats_after = await self.stats()
            redis_after = await self.redis_commands()
            step = {
                "rate": rate,
                "first_seq": first_seq,
                "count": count,
                "publish": published,
                "cpu": cpu_deltas(before, after),
                "cpu_wall_s": after["bench"]["time"] - before["bench"]["time"],
                "counters": self.counter_deltas(stats_before, stats_after),
                "redis": redis_deltas(redis_before, redis_after),
            }
            if profiles:
                step["profiles"] = await self.finish_profilers(profiles)
            steps.append(step)
            first_seq += count
            self.check_alive()
            await asyncio.sleep(min(args.pause, self.remaining()))
        report["uptime_end"] = idle.uptime()
        report["loadavg_end"] = os.getloadavg()

        results = [reply[1] for reply in await self.ask_all(("stop",), 120)]
        report["steps"] = [self.evaluate(step, results) for step in steps]
        report["clients"] = [
            {key: result[key] for key in ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames", "lost")}
            for result in results
        ]
        report["log_problems"] = {
            managed.name: managed.log_problems()[-20:] for managed in self.workers if managed.log_problems()
        }
        return report

    def counter_deltas(self, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """Counters moved during a step: every `dispatch_*` counter of d0 (their names vary with the core's
        version: `dispatch_group_sends`, or `dispatch_worker_messages` and `dispatch_lookups`), the
        receivers' COUNTERS_W."""
        result: dict[str, Any] = {}
        for name in after:
            if name == "d0":
                keys = [key for key, value in after[name].items() if key.startswith("dispatch_") and _is_number(value)]
            else:
                keys = list(COUNTERS_W)
            result[name] = {key: after[name].get(key, 0) - before[name].get(key, 0) for key in keys}
        return result

    def evaluate(self, step: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
        """Deliveries, latency and channel-layer messages of one step, from the clients' per-event records."""
        plan = self.plan
        first_seq, count = step["first_seq"], step["count"]
        seqs = range(first_seq, first_seq + count)
        counts = [0] * count
        last = [0.0] * count
        published_at = [0.0] * count
        for result in results:
            result_counts = result["counts"]
            result_last = array("d", result["last"])
            result_published = array("d", result["published_at"])
            for offset, seq in enumerate(seqs):
                if result_counts[seq]:
                    counts[offset] += result_counts[seq]
                    last[offset] = max(last[offset], result_last[seq])
                    published_at[offset] = result_published[seq]
        accepted = [offset for offset, seq in enumerate(seqs) if self.accepted[seq]]
        expected = {offset: plan.subscribers(plan.target(first_seq + offset)) for offset in accepted}
        bound = sum(plan.hosts(plan.target(first_seq + offset)) for offset in accepted)
        shared = sum(1 for offset in accepted if plan.target(first_seq + offset) >= plan.connections)
        complete = [offset for offset in accepted if counts[offset] >= expected[offset]]
        received = sum(min(counts[offset], expected[offset]) for offset in accepted)
        over = sum(max(0, counts[offset] - expected.get(offset, 0)) for offset in range(count))
        from_sent = [last[offset] - self.sent_at[first_seq + offset] for offset in complete]
        from_published = [last[offset] - published_at[offset] for offset in complete if published_at[offset]]
        publish = step["publish"]
        window_end = max((last[offset] for offset in complete), default=publish["first_sent"])
        window = max(self.args.step_secs, window_end - publish["first_sent"])
        counters = step["counters"]
        receivers = [name for name in counters if name != "d0"]
        messages = sum(counters[name]["received_messages"] for name in receivers)
        worker_events = sum(counters[name]["received_events"] for name in receivers)
        dispatch = counters.get("d0", {})
        published = dispatch.get("dispatch_published", 0)
        # One send = one channel-layer message from d0: a group_send per topic and round (fanned out by the
        # layer to each member worker), or, where the core batches per worker, one message per worker and round.
        per_worker = "dispatch_group_sends" not in dispatch and "dispatch_worker_messages" in dispatch
        sends = dispatch.get("dispatch_worker_messages" if per_worker else "dispatch_group_sends", 0)
        return {
            **step,
            "accepted_events": len(accepted),
            "shared_events": shared,
            "expected_deliveries": sum(expected.values()),
            "received_deliveries": received,
            "lost": sum(expected.values()) - received,
            "over_delivered": over,
            "events_complete": len(complete),
            "window_s": window,
            "delivered_events_per_s": len(complete) / window,
            "deliveries_per_s": received / window,
            "latency_from_sent_s": percentiles(from_sent, (50, 90, 99)),
            "latency_from_published_s": percentiles(from_published, (50, 90, 99)),
            "channel_layer": {
                "published": published,
                "send_kind": "worker messages" if per_worker else "group sends",
                "sends": sends,
                "rounds": dispatch.get("dispatch_lookups"),
                "messages": messages,
                "worker_events": worker_events,
                "bound": bound,
                "messages_per_event": messages / published if published else None,
                "bound_per_event": bound / len(accepted) if accepted else None,
                "events_per_send": published / sends if sends else None,
                "within_bound": messages <= bound,
                "worker_events_equal_bound": worker_events == bound,
                "stray_events": sum(counters[name]["stray_events"] for name in receivers),
            },
        }


def start_pyspy(pid: int, out: Path, duration: int, *, native: bool, gil: bool) -> subprocess.Popen | None:
    """`py-spy record` on `pid` (bench/pyspy.start, plus --gil).

    With --gil only the thread holding the GIL is sampled: a thread waiting in epoll (uvloop releases the
    GIL there) or on a lock is left out, so the shares are shares of the interpreter's busy time. Without it,
    under uvloop, the event loop's waits show up as "self" time of Twisted's `AsyncioSelectorReactor.run`.
    """
    exe = pyspy.binary()
    if exe is None:
        return None
    args = [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "--duration", str(duration)]
    args += ["--rate", "100", "--threads", "--native" if native else "--nonblocking"]
    if gil:
        args.append("--gil")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


# Where a worker's profiled samples go, by area. A sample counts for the first of AREAS with a frame anywhere on
# its stack; else for the area of its innermost frame that GENERIC_AREAS knows, skipping the event loop's own
# frames (they are at the root of every main-thread stack and under every await); else for the event loop.
AREAS = (
    (
        "membership lookup (Dispatcher._hosts: ZREMRANGEBYSCORE + ZRANGE per topic)",
        ("dispatcher.py:Dispatcher._hosts",),
    ),
    ("messages to workers (RedisChannelLayer.send)", ("channels_redis/core.py:RedisChannelLayer.send",)),
    ("group_send (one per topic and round)", ("channels_redis/core.py:RedisChannelLayer.group_send",)),
    ("channel-layer receive", ("channels_redis/core.py:RedisChannelLayer.receive",)),
    ("event build: id, JSON, SSE frame (publish.build_event)", ("realtime/publish.py:build_event",)),
    ("batch validation (DRF serializers)", ("rest_framework/serializers.py",)),
    ("authentication (DRF token, ORM)", ("rest_framework/authentication.py", "django/db/")),
    ("request body parsing (JSON)", ("rest_framework/request.py:Request._load_data_and_files",)),
    ("response rendering", ("rest_framework/renderers.py", "rest_framework/response.py")),
    ("fan-out writes to streams (Hub.fan_out)", ("realtime/hub.py:Hub.fan_out",)),
    ("keep-alives (Hub.write_all)", ("realtime/hub.py:Hub.write_all",)),
    ("Daphne's application checker", ("daphne/server.py:Server.application_checker",)),
)
LOOP_FRAMES = ("asyncio/", "twisted/internet/asyncioreactor.py", "daphne/server.py:Server.run", "daphne/cli.py")
GENERIC_AREAS = (
    ("sync/async hand-offs (asgiref, thread start, locks)", ("asgiref/", "threading.py", "concurrent/futures/")),
    ("Daphne / Twisted HTTP", ("daphne/", "twisted/")),
    ("other Django / DRF / middleware code", ("django/", "rest_framework/", "whitenoise/")),
    ("other Redis client work", ("redis/", "channels_redis/", "msgpack/")),
    ("other realtime code", ("realtime/",)),
)
EVENT_LOOP = "event loop itself (asyncio, uvloop, Twisted reactor)"


def profile_areas(path: Path) -> dict[str, Any]:
    """Shares of a raw py-spy profile (all threads) by area: AREAS, then GENERIC_AREAS by innermost frame."""
    areas: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        labels = [_frame_label(frame) for frame in stack.split(";")[1:]]
        samples = int(count)
        total += samples
        areas[_area_of(labels)] += samples
    return {"samples": total, "areas": [[area, count, round(count / total, 4)] for area, count in areas.most_common()]}


def _area_of(labels: list[str]) -> str:
    for area, patterns in AREAS:
        if any(pattern in label for label in labels for pattern in patterns):
            return area
    for label in reversed(labels):
        if label.startswith(LOOP_FRAMES):
            continue  # asyncio's machinery: what it ran for is further out, if anywhere
        for area, patterns in GENERIC_AREAS:
            if label.startswith(patterns):
                return area
    return EVENT_LOOP


def _frame_label(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'path/to/file.py:func', paths relative to site-packages or the repo."""
    func, _, where = frame.rpartition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/python3.11/", "/work/main/"):
        path = path.rpartition(marker)[2] if marker in path else path
    return f"{path}:{func}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def redis_deltas(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    commands = {}
    for name, values in after.items():
        calls = values["calls"] - before.get(name, {}).get("calls", 0.0)
        if calls:
            commands[name] = {"calls": calls, "usec": values["usec"] - before.get(name, {}).get("usec", 0.0)}
    return {
        "calls": sum(value["calls"] for value in commands.values()),
        "usec": sum(value["usec"] for value in commands.values()),
        "commands": dict(sorted(commands.items(), key=lambda item: -item[1]["calls"])),
    }


# -- output --------------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    args = report["config"]
    cores = report["machine"]["nproc"]
    conn = report["connect"]
    mode = (
        f"batches of {args['batch']} events" if args["batch"] > 1 else "single-event POSTs"
    ) + f" over {args['publish_concurrency']} connections"
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. "
        f"Code: {idle.code_label(report)}.",
        "",
        f"{conn['held']:,} of {conn['requested']:,} streams held on {args['workers']} workers (errors: "
        f"{conn['errors'] or 'none'}), {report['plan']['topics']:,} topics: each stream its own plus "
        f"{args['shared_per_connection']} of {args['shared_topics']} shared ones (subscribers per shared topic "
        f"{min(report['plan']['shared_subscribers'])}-{max(report['plan']['shared_subscribers'])}, hosted by "
        f"{min(report['plan']['shared_hosts'])}-{max(report['plan']['shared_hosts'])} workers). Every publish "
        f"through d0 ({mode}); {args['shared_fraction'] * 100:g} % of events to shared topics; "
        f"{args['step_secs']:g} s per step.",
        "",
        "| target events/s | sent / accepted (202) | accepted events/s | delivered events/s | POST p50 / p99 ms | "
        "POST sent -> received p50 / p99 / max ms | `published_at` -> received p50 / p99 ms | lost | "
        "over-delivered | p99 < 1 s and all accepted |",
        "| ---: | --- | ---: | ---: | --- | --- | --- | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        pub, lat, latp = step["publish"], step["latency_from_sent_s"], step["latency_from_published_s"]
        met = (
            step["accepted_events"] == step["count"]
            and lat["p99"] is not None
            and lat["p99"] < 1.0
            and step["lost"] == 0
            and (pub["accepted_per_s"] or 0) >= 0.95 * step["rate"]
        )
        behind = f" ({pub['not_sent']:,} not sent: d0 behind)" if pub["not_sent"] else ""
        lines.append(
            f"| {step['rate']:,.0f} | {pub['sent']:,} / {step['accepted_events']:,}{behind} | "
            f"{_n(pub['accepted_per_s'])} | {_n(step['delivered_events_per_s'])} | "
            f"{ms(pub['post_latency_s']['p50'])} / {ms(pub['post_latency_s']['p99'])} | "
            f"{ms(lat['p50'])} / {ms(lat['p99'])} / {ms(lat['max'])} | {ms(latp['p50'])} / {ms(latp['p99'])} | "
            f"{step['lost']:,} | {step['over_delivered']:,} | {'yes' if met else 'no'} |"
        )
    lines += [
        "",
        "| target events/s | published (d0) | sends by d0 | events per send | channel-layer messages "
        "(received by workers) | messages per event | bound: hosting workers per event | worker events = bound | "
        "Redis commands per event | d0 CPU per event | CPU server / client (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        layer, cpu = step["channel_layer"], step["cpu"]
        published = layer["published"]
        per_event_us = cpu.get("d0", 0.0) / published * 1e6 if published else None
        server = sum(value for name, value in cpu.items() if idle.is_server(name))
        client = sum(value for name, value in cpu.items() if idle.is_client(name))
        ok = "yes" if layer["worker_events_equal_bound"] else f"no ({layer['worker_events']:,} vs {layer['bound']:,})"
        lines.append(
            f"| {step['rate']:,.0f} | {published:,} | {layer['sends']:,} {layer['send_kind']} | "
            f"{_n(layer['events_per_send'], 2)} | {layer['messages']:,} | {_n(layer['messages_per_event'], 3)} "
            f"{'<=' if layer['within_bound'] else '>'} | {_n(layer['bound_per_event'], 3)} | {ok} | "
            f"{_n(step['redis']['calls'] / published if published else None, 1)} | "
            f"{_n(per_event_us, 0)} µs | {server:.1f} / {client:.1f} |"
        )
    lines += ["", "CPU per step (seconds, per process; `bench` is the publisher and stats reader):", ""]
    for step in report["steps"]:
        lines.append(f"- {step['rate']:,.0f}/s: {cpu_line(step['cpu'], step['cpu_wall_s'], cores)}")
    top = report["steps"][-1]["redis"]["commands"]
    if top:
        lines += [
            "",
            "Redis commands in the last step: "
            + ", ".join(f"{name} {value['calls']:,.0f}" for name, value in list(top.items())[:8]),
        ]
    for step in report["steps"]:
        for profile in step.get("profiles", []):
            if profile.get("error"):
                lines += ["", f"py-spy {profile['worker']} at {step['rate']:g}/s: {profile['error']}"]
                continue
            lines += [
                "",
                f"py-spy {profile['worker']} at {step['rate']:g}/s ({profile['path']}):",
                "",
                render_areas(profile["areas"]),
                "",
                pyspy.render(profile["main_thread"]),
                pyspy.render(profile["all_threads"]),
            ]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.areas:
        for path in args.areas:
            print(f"{path}:\n\n{render_areas(profile_areas(path))}\n")
        return 0
    return idle.run_main(lambda: DispatchRun(args), render, args.results_dir)


if __name__ == "__main__":
    sys.exit(main())
