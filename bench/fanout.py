"""Broadcast fan-out benchmark: N SSE streams on one topic over W Daphne workers; publish M events; measure.

    .venv/bin/python -m bench.fanout --workers 2 --connections 1000

Starts its own redis-server and W `daphne livesite.asgi:application` workers on free loopback ports (a temp
dir with a migrated SQLite file and a staff user + DRF token), opens N streams round-robin over the workers
(`GET /realtime/connect?topics=bench.shared`) from C client processes and K source addresses 127.0.0.x,
publishes M events through `POST /api/publish` at a fixed rate (round-robin over the workers), and reports
connections held, worker memory per connection (RSS and PSS), file descriptors, publish-to-receive latency,
fan-out completion per event, deliveries/s, losses, and the CPU of the server processes and of the client.
Prints Markdown tables and writes JSON to bench/results/<name>-<timestamp>.json. Everything it started is
stopped by PID at the end, also on Ctrl-C and errors; every phase is bounded by --timeout.

`--target eventstream` measures the peer instead, with the same client and publisher: django-eventstream's
minimal project (bench/peers/eventstream, its own virtualenv, see bench/peer.py) on W Daphne workers sharing
the redis-server, streams `GET /events/?channel=<topic>` (held once headers and first bytes arrived: it has no
`connected` frame), publishes `POST /publish` (`send_event` behind a shared secret), stats `GET /stats`.
bench/sidebyside.py runs both targets in one invocation and prints the ratios.
"""

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loadclient, peer, procs, pyspy
from bench.httpmini import HttpConnection, HttpError
from bench.procs import percentiles

RESULTS = Path(__file__).resolve().parent / "results"
EVENT_TYPE = "bench.tick"
TARGETS = ("livesite", "eventstream")
MAX_CONNECTIONS_PER_CLIENT = 19_000  # RLIMIT_NOFILE is 20,000 here and cannot be raised
MAX_CONNECTIONS_PER_SOURCE = 25_000  # ephemeral ports per (source, destination) are ~28,000


class BenchError(Exception):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=TARGETS, default="livesite", help="server measured (default livesite)")
    parser.add_argument("--workers", type=int, default=2, help="Daphne workers (default 2)")
    parser.add_argument("--connections", type=int, default=1000, help="SSE streams to open (default 1000)")
    parser.add_argument("--events", type=int, default=100, help="events to publish (default 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="events published per second (default 10)")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    parser.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    parser.add_argument("--topic", default="bench.shared")
    parser.add_argument("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    parser.add_argument("--publish-concurrency", type=int, default=4, help="keep-alive publisher connections")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases before measuring")
    parser.add_argument(
        "--drain", type=float, default=20.0, help="max seconds to wait for deliveries after the last publish"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="global bound of the whole run, seconds")
    parser.add_argument("--profile", type=int, default=0, help="py-spy each worker for this many seconds of publishing")
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames; pauses workers)")
    what_if = parser.add_argument_group("what-if hooks in the workers (bench/sitehooks; not the plain core)")
    what_if.add_argument("--worker-gc-stats", action="store_true", help="count and time the workers' collections")
    what_if.add_argument("--worker-gc-threshold", default="", help="gc.set_threshold(a,b,c) in each worker")
    what_if.add_argument("--worker-gc-freeze", type=float, default=0, help="gc.freeze() every this many seconds")
    what_if.add_argument("--worker-uvloop", action="store_true", help="uvloop's policy before Daphne makes its loop")
    what_if.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the workers, e.g. "
        "REALTIME_FLUSH_MS=0 (repeatable; livesite's own knobs are otherwise cleared)",
    )
    parser.add_argument("--name", default="", help="results name (default fanout-w<W>-c<N>)")
    parser.add_argument(
        "--rev", default="", help="run the site as committed at this git revision (default: the working tree)"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in the client")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, database)")
    parser.add_argument(
        "--warm-stream", action="store_true", help="open and close one stream per worker before the baseline"
    )
    args = parser.parse_args(argv)
    if args.workers < 1 or args.connections < 1 or args.events < 1 or args.rate <= 0:
        parser.error("--workers, --connections, --events and --rate must be positive")
    args.clients = args.clients or math.ceil(args.connections / MAX_CONNECTIONS_PER_CLIENT)
    if math.ceil(args.connections / args.clients) > MAX_CONNECTIONS_PER_CLIENT:
        parser.error(f"at most {MAX_CONNECTIONS_PER_CLIENT} streams per client process: raise --clients")
    per_worker = math.ceil(args.connections / args.workers)
    args.sources = args.sources or math.ceil(per_worker / MAX_CONNECTIONS_PER_SOURCE)
    if not 1 <= args.sources <= 254:
        parser.error("--sources must be within 1..254")
    if args.target != "livesite":
        livesite_only = {
            "--rev": args.rev,
            "--worker-gc-stats": args.worker_gc_stats,
            "--worker-gc-threshold": args.worker_gc_threshold,
            "--worker-gc-freeze": args.worker_gc_freeze,
            "--worker-uvloop": args.worker_uvloop,
            "--worker-env": args.worker_env,
        }
        given = [option for option, value in livesite_only.items() if value]
        if given:
            parser.error(f"{', '.join(given)}: livesite only")
    prefix = "fanout" if args.target == "livesite" else f"fanout-{args.target}"
    args.name = args.name or f"{prefix}-w{args.workers}-c{args.connections}"
    return args


# -- statistics ----------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


# -- the run -------------------------------------------------------------------------------------


class Run:
    """One benchmark run against one target. `redis`: a redis-server shared with other runs (not stopped here)."""

    def __init__(self, args: argparse.Namespace, redis: procs.Managed | None = None) -> None:
        self.args = args
        self.shared_redis = redis
        self.started = time.monotonic()
        self.deadline = self.started + args.timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
        self.redis: procs.Managed | None = redis
        self.workers: list[procs.Managed] = []
        self.clients: list[Any] = []  # multiprocessing.Process
        self.pipes: list[Any] = []
        self.profilers: list[subprocess.Popen] = []
        self.token = ""
        self.secret = secrets.token_hex(16)  # the peer's publish secret
        self.report: dict[str, Any] = {}

    # -- what differs between targets ------------------------------------------------------------

    @property
    def peer(self) -> bool:
        return self.args.target == "eventstream"

    def auth_headers(self) -> dict[str, str]:
        return {"X-Bench-Secret": self.secret} if self.peer else {"Authorization": f"Token {self.token}"}

    def stats_path(self) -> str:
        return "/stats" if self.peer else "/realtime/stats"

    def stream_path(self) -> str:
        return f"/events/?channel={self.args.topic}" if self.peer else f"/realtime/connect?topics={self.args.topic}"

    def publish_request(self, topic: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of one publish; both answer 202."""
        if self.peer:
            return "/publish", {"channel": topic, "type": EVENT_TYPE, "data": data}
        return "/api/publish", {"topic": topic, "type": EVENT_TYPE, "data": data}

    # -- helpers --------------------------------------------------------------------------------

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run passed its --timeout of {self.args.timeout:.0f}s")
        return left if cap is None else min(left, cap)

    def pids(self) -> dict[str, int]:
        named = {worker.name: worker.pid for worker in self.workers}
        if self.redis is not None:
            named["redis"] = self.redis.pid
        for index, process in enumerate(self.clients):
            named[f"client{index}"] = process.pid
        named["publisher"] = os.getpid()
        return named

    def snapshot(self) -> dict[str, dict[str, Any]]:
        readings = {name: procs.sample(pid) for name, pid in self.pids().items()}
        readings["machine"] = {"cpu_s": procs.machine_cpu_seconds(), "time": time.time()}
        return readings

    def check_alive(self) -> None:
        for managed in [*self.workers, *([self.redis] if self.redis else [])]:
            if managed.process.poll() is not None:
                problems = "\n".join(managed.log_problems()[-5:])
                raise BenchError(f"{managed.name} exited with {managed.process.returncode}\n{problems}")

    async def recv(self, index: int, timeout: float) -> tuple:
        """The next message from client process `index`, within `timeout` seconds."""
        loop = asyncio.get_running_loop()
        pipe = self.pipes[index]
        future: asyncio.Future = loop.create_future()

        def ready() -> None:
            loop.remove_reader(pipe.fileno())
            if future.done():
                return
            try:
                future.set_result(pipe.recv())
            except (EOFError, OSError) as exc:
                future.set_exception(BenchError(f"client process {index} went away: {exc!r}"))

        loop.add_reader(pipe.fileno(), ready)
        try:
            return await asyncio.wait_for(future, self.remaining(timeout))
        except TimeoutError:
            raise BenchError(f"client process {index} did not answer within {timeout:.0f}s") from None
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(pipe.fileno())

    async def ask_all(self, command: tuple, timeout: float) -> list[tuple]:
        for pipe in self.pipes:
            pipe.send(command)
        return [await self.recv(index, timeout) for index in range(len(self.pipes))]

    async def stats(self) -> list[dict[str, Any]]:
        result = []
        path = self.stats_path()
        for worker in self.workers:
            connection = HttpConnection("127.0.0.1", worker.port, headers=self.auth_headers())
            try:
                status, body = await connection.request("GET", path, timeout=self.remaining(10))
            finally:
                connection.close()
            if status != 200:
                raise BenchError(f"GET {path} on {worker.name}: {status} {body!r}")
            result.append(body)
        return result

    # -- phases ---------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        if self.peer:
            await self.start_peer()
            return
        root = procs.ROOT
        if self.args.rev:
            root = self.tmp / "src"
            self.report["code"] = {"rev": self.args.rev, "commit": procs.export_tree(self.args.rev, root)}
        else:
            self.report["code"] = {"rev": "working tree", "commit": self.report["machine"]["git_commit"]}
        if self.redis is None:
            self.redis = procs.start_redis(self.tmp, self.deadline)
        env = procs.site_env(self.tmp, f"redis://127.0.0.1:{self.redis.port}/0", root, **self.what_if_env(root))
        staff = await asyncio.to_thread(procs.prepare_site, env, root, self.deadline)
        self.token = staff["token"]
        self.workers = procs.start_workers(self.args.workers, env, self.tmp, root, self.deadline)

    async def start_peer(self) -> None:
        """django-eventstream's project on W Daphne workers from its own virtualenv (created if missing)."""
        info = await asyncio.to_thread(peer.ensure_peer_venv, self.remaining())
        self.report["code"] = {"rev": "django-eventstream peer (bench/peers/eventstream)", **info}
        if self.redis is None:
            self.redis = procs.start_redis(self.tmp, self.deadline)
        env = peer.peer_env(self.redis.port, self.secret)
        self.workers = peer.start_peer_workers(self.args.workers, env, self.tmp, self.deadline)

    def what_if_env(self, root: Path) -> dict[str, str]:
        """Environment for bench/sitehooks when a what-if option is given; empty for the plain core."""
        args = self.args
        env = {}
        if args.worker_gc_stats:
            env["BENCH_GC_STATS"] = "1"  # procs.start_workers gives each worker its own file
        if args.worker_gc_threshold:
            env["BENCH_GC_THRESHOLD"] = args.worker_gc_threshold
        if args.worker_gc_freeze:
            env["BENCH_GC_FREEZE_SECS"] = str(args.worker_gc_freeze)
        if args.worker_uvloop:
            env["BENCH_UVLOOP"] = "1"
        if env:
            env["PYTHONPATH"] = f"{procs.HOOKS}:{root}"
        for setting in args.worker_env:
            name, _, value = setting.partition("=")
            env[name.strip()] = value
        return env

    def gc_snapshot(self) -> dict[str, Any]:
        return {worker.name: procs.read_gc_stats(worker) for worker in self.workers}

    async def warm_up(self) -> None:
        """Touch the stats and publish paths on every worker, so the baseline includes what they load."""
        for worker in self.workers:
            connection = HttpConnection("127.0.0.1", worker.port, headers=self.auth_headers())
            try:
                path, event = self.publish_request("bench.warmup", {"seq": -1, "sent_at": time.time()})
                for _ in range(3):
                    status, body = await connection.request("POST", path, event, timeout=self.remaining(20))
                    if status != 202:
                        raise BenchError(f"warm-up publish on {worker.name}: {status} {body!r}")
            finally:
                connection.close()
        await self.stats()

    async def warm_streams(self) -> None:
        """Open one stream per worker, read its first bytes, close it: what the first stream loads is then in
        the baseline (the peer, for one, starts its Redis listener at its first stream)."""
        request = (
            f"GET {self.stream_path()} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        ).encode()
        for worker in self.workers:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", worker.port), self.remaining(10)
            )
            try:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.remaining(20))
                if b" 200 " not in head.split(b"\r\n", 1)[0]:
                    raise BenchError(f"warm-up stream on {worker.name}: {head[:200]!r}")
                await asyncio.wait_for(reader.read(1), self.remaining(20))
            finally:
                writer.close()
        await asyncio.sleep(0.5)  # the workers see the disconnects

    def start_clients(self) -> list[list[tuple[int, str]]]:
        args = self.args
        sources = [f"127.0.0.{index + 1}" for index in range(args.sources)]
        targets: list[list[tuple[int, str]]] = [[] for _ in range(args.clients)]
        for index in range(args.connections):
            worker = self.workers[index % args.workers]
            source = sources[(index // args.workers) % len(sources)]
            targets[index % args.clients].append((worker.port, source))
        path = self.stream_path()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        context = multiprocessing.get_context("spawn")
        # Each client gets its share of the concurrency and the global deadline, in wall-clock time.
        wall_deadline = time.time() + (self.deadline - time.monotonic())
        for index, share in enumerate(targets):
            parent, child = context.Pipe()
            config = {
                "targets": share,
                "request": request.encode(),
                "concurrency": max(1, args.connect_concurrency // args.clients),
                "connect_timeout": args.connect_timeout,
                "deadline": wall_deadline,
                "uvloop": not args.no_uvloop,
                "ready_on": "first-bytes" if self.peer else "connected",
            }
            process = context.Process(target=loadclient.main, args=(child, config), name=f"bench-client{index}")
            process.daemon = True
            process.start()
            child.close()
            self.clients.append(process)
            self.pipes.append(parent)
        return targets

    async def connect(self, targets: list[list[tuple[int, str]]]) -> dict[str, Any]:
        for pipe in self.pipes:
            pipe.send(("connect",))
        budget = self.args.connect_timeout + self.args.connections / 50  # generous: >= 50 streams/s
        replies = [await self.recv(index, budget) for index in range(len(self.clients))]
        results = [reply[1] for reply in replies]
        errors: Counter[str] = Counter()
        connect_secs = array("d")
        for result in results:
            errors.update(result["errors"])
            connect_secs.frombytes(result["connect_secs"])
        held = sum(result["held"] for result in results)
        wall = max(result["ended"] for result in results) - min(result["started"] for result in results)
        return {
            "requested": self.args.connections,
            "per_client": [len(share) for share in targets],
            "held": held,
            "failed": sum(result["failed"] for result in results),
            "errors": dict(errors),
            "wall_s": wall,
            "rate_per_s": held / wall if wall > 0 else None,
            "time_to_connected_s": percentiles(connect_secs),
        }

    async def publish(self, events: int = 0, rate: float = 0.0) -> dict[str, Any]:
        """Publish `events` events (default --events) at `rate` per second (default --rate) through keep-alive
        connections spread over the workers."""
        args = self.args
        events = events or args.events
        rate = rate or args.rate
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        connections = [
            HttpConnection("127.0.0.1", self.workers[index % len(self.workers)].port, headers=self.auth_headers())
            for index in range(max(1, args.publish_concurrency))
        ]
        for connection in connections:
            pool.put_nowait(connection)
        sent_at = [0.0] * events
        post_secs = [0.0] * events
        statuses: Counter[str] = Counter()
        padding = "x" * args.payload_bytes

        async def one(seq: int, connection: HttpConnection) -> None:
            now = time.time()
            sent_at[seq] = now
            data: dict[str, Any] = {"seq": seq, "sent_at": now}
            if padding:
                data["pad"] = padding
            path, event = self.publish_request(args.topic, data)
            try:
                status, _ = await connection.request("POST", path, event, timeout=10)
                statuses[str(status)] += 1
            except (HttpError, OSError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            finally:
                post_secs[seq] = time.time() - now
                pool.put_nowait(connection)

        tasks = []
        start = loop.time() + 0.05
        try:
            for seq in range(events):
                delay = start + seq / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, self.remaining()))
                wait = self.remaining(30)
                connection = await asyncio.wait_for(pool.get(), wait)
                tasks.append(asyncio.create_task(one(seq, connection)))
            await asyncio.wait_for(asyncio.gather(*tasks), self.remaining(30))
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                connection.close()
        span = max(sent_at) - min(sent_at)
        return {
            "events": events,
            "rate_target": rate,
            "rate_achieved": (events - 1) / span if span > 0 else None,
            "statuses": dict(statuses),
            "accepted": statuses.get("202", 0),
            "post_latency_s": percentiles(post_secs),
            "sent_at": sent_at,
            "first_sent": min(sent_at),
            "last_sent": max(sent_at),
        }

    async def drain(self, expected: int) -> dict[str, Any]:
        """Poll the clients until every expected delivery arrived, or --drain seconds passed."""
        limit = time.monotonic() + self.args.drain
        while True:
            replies = await self.ask_all(("status",), 30)
            received = sum(reply[1]["received"] for reply in replies)
            if received >= expected or time.monotonic() > limit:
                return {"received": received, "complete": received >= expected}
            await asyncio.sleep(min(0.2, self.remaining()))

    def start_profilers(self, seconds: int) -> list[dict[str, Any]]:
        outputs = []
        if pyspy.binary() is None:
            print("py-spy is not installed: no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
            return outputs
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        stamp = self.report["stamp"]
        for worker in self.workers:
            out = self.args.results_dir / f"{self.args.name}-{stamp}-{worker.name}-{worker.pid}.pyspy.txt"
            if self.peer:
                process = start_pyspy_gil(worker.pid, out, seconds)
            else:
                process = pyspy.start(worker.pid, out, seconds, native=self.args.profile_native)
            if process is not None:
                self.profilers.append(process)
                outputs.append({"worker": worker.name, "path": out})
        return outputs

    async def finish_profilers(self, outputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        summaries = []
        for process, output in zip(self.profilers, outputs, strict=True):
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), self.remaining(self.args.profile + 30))
            except TimeoutError:
                process.kill()
            error = process.stderr.read().decode(errors="replace")[-500:] if process.stderr else ""
            path = output["path"]
            if process.returncode == 0 and path.exists():
                summary = pyspy.summarise(path, main_thread_only=not self.peer)
                summaries.append({"worker": output["worker"], "path": str(path), **summary})
            else:
                summaries.append({"worker": output["worker"], "error": f"py-spy exited {process.returncode}: {error}"})
        self.profilers = []
        return summaries

    async def prepare(self) -> tuple[list[list[tuple[int, str]]], dict[str, Any]]:
        """Servers up and warm, client processes started (not connected); (their targets, the baseline)."""
        args = self.args
        report = self.report
        report["stamp"] = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report["machine"] = machine()
        report["config"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        report["loadavg_start"] = os.getloadavg()

        await self.start_servers()
        await self.warm_up()
        if args.warm_stream:
            await self.warm_streams()
        targets = self.start_clients()
        for index in range(len(self.clients)):
            reply = await self.recv(index, 60)
            if reply[0] != "ready":
                raise BenchError(f"client process {index} said {reply[0]!r} instead of 'ready'")
        await asyncio.sleep(args.settle)
        self.check_alive()
        return targets, self.snapshot()

    async def publish_step(self, events: int, rate: float, held: int, profile: int = 0) -> dict[str, Any]:
        """Publish `events` at `rate` to the `held` streams and wait for them; the streams stay open.

        Returns the publish and drain results, the /proc readings before and after, the workers' stats
        and GC counts after, and the py-spy summaries when `profile` (seconds) is given.
        """
        await self.ask_all(("expect", events), 30)
        print(f"publishing {events} events at {rate}/s to {held} streams ...", file=sys.stderr)
        profiles = self.start_profilers(profile) if profile else []
        gc_before = self.gc_snapshot()
        before_publish = self.snapshot()
        publish = await self.publish(events, rate)
        drain = await self.drain(held * publish["accepted"])
        after_publish = self.snapshot()
        await asyncio.sleep(1.1)  # the hooks write their counters every second
        step = {
            "publish": publish,
            "drain": drain,
            "before_publish": before_publish,
            "after_publish": after_publish,
            "gc": gc_deltas(gc_before, self.gc_snapshot()),
            "stats": await self.stats(),
            "loadavg_end": os.getloadavg(),
        }
        if profiles:
            step["profiles"] = await self.finish_profilers(profiles)
        return step

    async def main(self) -> dict[str, Any]:
        args = self.args
        report = self.report
        targets, baseline = await self.prepare()

        print(f"opening {args.connections} streams over {args.workers} workers ...", file=sys.stderr)
        report["connect"] = await self.connect(targets)
        await asyncio.sleep(args.settle)
        self.check_alive()
        after_connect = self.snapshot()
        stats_connected = await self.stats()
        held = report["connect"]["held"]
        if held == 0:
            raise BenchError(f"no stream connected: {report['connect']['errors']}")

        step = await self.publish_step(args.events, args.rate, held, args.profile)
        report["publish"], report["drain"] = step["publish"], step["drain"]
        before_publish, after_publish = step["before_publish"], step["after_publish"]
        report["gc"] = step["gc"]
        stats_published = step["stats"]
        report["loadavg_end"] = step["loadavg_end"]
        if "profiles" in step:
            report["profiles"] = step["profiles"]

        results = [reply[1] for reply in await self.ask_all(("stop",), 60)]
        report["samples"] = {
            "baseline": baseline,
            "after_connect": after_connect,
            "before_publish": before_publish,
            "after_publish": after_publish,
        }
        report["worker_stats"] = {"after_connect": stats_connected, "after_publish": stats_published}
        report["deliveries"] = deliveries(results, report["publish"], held, args.events)
        report["memory"] = memory(self.workers, baseline, after_connect, after_publish, stats_connected)
        report["cpu"] = cpu(before_publish, after_publish, after_connect, baseline)
        report["clients"] = [
            {key: result[key] for key in ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames")}
            for result in results
        ]
        report["log_problems"] = {
            managed.name: managed.log_problems()[-20:] for managed in self.workers if managed.log_problems()
        }
        return report

    def cleanup(self) -> None:
        """Stop everything this run started, by PID: profilers, clients, workers, redis."""
        for process in self.profilers:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.close()
        for process in self.clients:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
        owned_redis = [self.redis] if self.redis is not None and self.redis is not self.shared_redis else []
        for managed in [*self.workers, *owned_redis]:
            with contextlib.suppress(Exception):
                managed.stop()
        if self.args.keep_tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def start_pyspy_gil(pid: int, out: Path, seconds: int) -> subprocess.Popen | None:
    """py-spy on the thread holding the GIL only, for the peer: Django gives each of its open streams an OS
    thread (the per-request executor of a sync view), and `--threads` over thousands of them cannot keep up
    (it timed out with 1,250 streams per worker). Samples are not split per thread: the GIL holder is the event
    loop nearly always."""
    exe = pyspy.binary()
    if exe is None:
        return None
    args = [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "--duration", str(seconds)]
    args += ["--rate", "100", "--gil", "--nonblocking"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def gc_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Collections per generation, and seconds spent in them, while publishing (with --worker-gc-stats)."""
    result = {}
    for name, end in after.items():
        start = before.get(name)
        if not end or not start:
            continue
        result[name] = {
            "collections": [e - s for s, e in zip(start["counts"], end["counts"], strict=True)],
            "seconds": [round(e - s, 3) for s, e in zip(start["seconds"], end["seconds"], strict=True)],
            "threshold": end["threshold"],
        }
    return result


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=procs.ROOT)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
        cwd=procs.ROOT,
    )
    return {
        "cpus": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "mem_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit.stdout.strip(),
        "git_dirty_files": [line[3:] for line in dirty.stdout.splitlines()],
        "nofile": procs.raise_nofile_limit(),
    }


def deliveries(results: list[dict[str, Any]], published: dict[str, Any], held: int, events: int) -> dict[str, Any]:
    counts = [0] * events
    last = [0.0] * events
    first = [math.inf] * events
    lat_sent = array("d")
    lat_published = array("d")
    for result in results:
        for seq, count in enumerate(result["counts"]):
            counts[seq] += count
        for seq, value in enumerate(array("d", result["last"])):
            last[seq] = max(last[seq], value)
        for seq, value in enumerate(array("d", result["first"])):
            if value:
                first[seq] = min(first[seq], value)
        lat_sent.frombytes(result["lat_sent"])
        lat_published.frombytes(result["lat_published"])
    sent_at = published["sent_at"]
    received = sum(counts)
    accepted = published["accepted"]
    complete = [seq for seq in range(events) if counts[seq] == held]
    completion = [last[seq] - sent_at[seq] for seq in complete]
    spread = [last[seq] - first[seq] for seq in complete]
    window = max(last) - published["first_sent"] if received else 0.0
    return {
        "expected": held * accepted,
        "received": received,
        "lost": held * accepted - received,
        "duplicates": sum(result["duplicates"] for result in results),
        "streams_lost": sum(result["lost"] for result in results),
        "resets": sum(result["resets"] for result in results),
        "events_complete": len(complete),
        "latency_from_send_s": percentiles(lat_sent, (50, 90, 99, 99.9)),
        "latency_from_published_at_s": percentiles(lat_published, (50, 90, 99, 99.9)),
        "completion_s": percentiles(completion),
        "first_to_last_s": percentiles(spread),
        "window_s": window,
        "per_s": received / window if window > 0 else None,
        "per_event": [
            {"seq": seq, "received": counts[seq], "completion_s": last[seq] - sent_at[seq] if counts[seq] else None}
            for seq in range(events)
        ],
    }


def memory(
    workers: list[procs.Managed],
    baseline: dict[str, Any],
    after_connect: dict[str, Any],
    after_publish: dict[str, Any],
    stats: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    rows = []
    for worker, stat in zip(workers, stats, strict=True):
        before, connected, published = baseline[worker.name], after_connect[worker.name], after_publish[worker.name]
        connections = stat["connections"]
        rows.append(
            {
                "worker": worker.name,
                "pid": worker.pid,
                "connections": connections,
                "rss_kb": [before["rss_kb"], connected["rss_kb"], published["rss_kb"]],
                "pss_kb": [before["pss_kb"], connected["pss_kb"], published["pss_kb"]],
                "fds": [before["fds"], connected["fds"], published["fds"]],
                "uss_kb": [before["uss_kb"], connected["uss_kb"], published["uss_kb"]],
                "anon_kb": [before["anon_kb"], connected["anon_kb"], published["anon_kb"]],
                **{
                    f"{kind}_per_conn_kb": (connected[f"{kind}_kb"] - before[f"{kind}_kb"]) / connections
                    if connections
                    else None
                    for kind in ("rss", "pss", "uss", "anon")
                },
            }
        )
    return rows


def cpu(
    before: dict[str, Any], after: dict[str, Any], connected: dict[str, Any], baseline: dict[str, Any]
) -> dict[str, Any]:
    def deltas(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
        """CPU seconds per process of ours, and `others`: every other process on the machine (other engineers)."""
        ours = {
            name: round(end[name]["cpu_s"] - start[name]["cpu_s"], 3)
            for name in end
            if name in start and name != "machine"
        }
        machine = end["machine"]["cpu_s"] - start["machine"]["cpu_s"]
        return {**ours, "others": round(max(0.0, machine - sum(ours.values())), 3)}

    wall = after["publisher"]["time"] - before["publisher"]["time"]
    publish = deltas(before, after)
    server = sum(value for name, value in publish.items() if name.startswith("w") or name == "redis")
    client = sum(value for name, value in publish.items() if name.startswith("client") or name == "publisher")
    return {
        "publish_wall_s": wall,
        "publish": publish,
        "publish_server_s": server,
        "publish_client_s": client,
        "connect_wall_s": connected["publisher"]["time"] - baseline["publisher"]["time"],
        "connect": deltas(baseline, connected),
    }


# -- output --------------------------------------------------------------------------------------


def render(report: dict[str, Any]) -> str:
    args = report["config"]
    conn, pub, dl, cpu_ = report["connect"], report["publish"], report["deliveries"], report["cpu"]
    lat, latp = dl["latency_from_send_s"], dl["latency_from_published_at_s"]
    comp, spread = dl["completion_s"], dl["first_to_last_s"]
    errors = ", ".join(f"{name} x{count}" for name, count in conn["errors"].items()) or "none"
    cores = report["machine"]["nproc"]
    ready_label = "first bytes" if args.get("target", "livesite") != "livesite" else "`connected`"

    def cpu_line(phase: str, wall: float) -> str:
        values = cpu_[phase]
        server = sum(v for k, v in values.items() if k.startswith("w") or k == "redis")
        client = sum(v for k, v in values.items() if k.startswith("client") or k == "publisher")
        parts = ", ".join(f"{k} {v:.1f}" for k, v in values.items() if k != "others")
        return (
            f"server {server:.1f} s, client {client:.1f} s over {wall:.1f} s wall "
            f"({(server + client) / wall / cores * 100:.0f} % of {cores} cores; other processes on the machine "
            f"{values['others']:.1f} s): {parts}"
        )

    rate = f"{pub['rate_achieved']:.1f}" if pub["rate_achieved"] else "-"
    per_s = f"{dl['per_s']:,.0f}" if dl["per_s"] else "-"
    worker_cpu = sum(v for k, v in cpu_["publish"].items() if k.startswith("w"))
    per_delivery = f"{worker_cpu / dl['received'] * 1e6:.1f} µs" if dl["received"] else "-"
    lines = [
        f"### {report['config']['name']} ({report['stamp']})",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| streams held | {conn['held']:,} of {conn['requested']:,} ({args['workers']} workers, "
        f"{args['clients']} client process(es), {args['sources']} source address(es)); failed: {errors} |",
        f"| connect | {conn['wall_s']:.2f} s, {conn['rate_per_s'] or 0:,.0f} streams/s; time to {ready_label} "
        f"p50 {ms(conn['time_to_connected_s']['p50'])} ms, p99 {ms(conn['time_to_connected_s']['p99'])} ms |",
        f"| published | {pub['accepted']} of {pub['events']} accepted ({pub['statuses']}), {rate} events/s "
        f"(target {pub['rate_target']:g}); POST p50 {ms(pub['post_latency_s']['p50'])} ms, "
        f"p99 {ms(pub['post_latency_s']['p99'])} ms |",
        f"| latency, POST sent -> received (ms) | p50 {ms(lat['p50'])}, p90 {ms(lat['p90'])}, "
        f"p99 {ms(lat['p99'])}, max {ms(lat['max'])} |",
        f"| latency, `published_at` -> received (ms) | p50 {ms(latp['p50'])}, p90 {ms(latp['p90'])}, "
        f"p99 {ms(latp['p99'])}, max {ms(latp['max'])} |",
        f"| fan-out completion per event, POST sent -> last delivery (ms) | p50 {ms(comp['p50'])}, "
        f"p90 {ms(comp['p90'])}, p99 {ms(comp['p99'])}, max {ms(comp['max'])} "
        f"({dl['events_complete']} of {pub['events']} events complete) |",
        f"| first -> last delivery of an event (ms) | p50 {ms(spread['p50'])}, p99 {ms(spread['p99'])}, "
        f"max {ms(spread['max'])} |",
        f"| deliveries | {dl['received']:,} of {dl['expected']:,}: lost {dl['lost']:,}, duplicates "
        f"{dl['duplicates']}, streams closed {dl['streams_lost']}, resets {dl['resets']} |",
        f"| deliveries/s (first POST -> last delivery, {dl['window_s']:.1f} s) | {per_s} |",
        f"| worker CPU per delivery while publishing | {per_delivery} |",
        f"| CPU while connecting | {cpu_line('connect', cpu_['connect_wall_s'])} |",
        f"| CPU while publishing | {cpu_line('publish', cpu_['publish_wall_s'])} |",
        f"| load average (1/5/15 min) start -> end | "
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_start'])} -> "
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_end'])} |",
        "",
        "| worker | streams | RSS MiB before -> connected -> published | RSS/stream | "
        "PSS MiB before -> connected -> published | PSS/stream | USS/stream | fds before -> connected |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for row in report["memory"]:
        rss, pss, fds = row["rss_kb"], row["pss_kb"], row["fds"]
        rss_per = f"{row['rss_per_conn_kb']:.1f} KiB" if row["rss_per_conn_kb"] is not None else "-"
        pss_per = f"{row['pss_per_conn_kb']:.1f} KiB" if row["pss_per_conn_kb"] is not None else "-"
        uss_per = f"{row['uss_per_conn_kb']:.1f} KiB" if row["uss_per_conn_kb"] is not None else "-"
        lines.append(
            f"| {row['worker']} | {row['connections']:,} | {' -> '.join(mib(v) for v in rss)} | {rss_per} | "
            f"{' -> '.join(mib(v) for v in pss)} | {pss_per} | {uss_per} | {fds[0]} -> {fds[1]} |"
        )
    for name, stats in report.get("gc", {}).items():
        lines += [
            "",
            f"{name} garbage collections while publishing (gen0/gen1/gen2): {stats['collections']}, "
            f"seconds {stats['seconds']} (threshold {stats['threshold']})",
        ]
    what_if = {key: args[key] for key in args if key.startswith("worker_") and args[key]}
    if what_if:
        lines += ["", f"what-if hooks in the workers: {what_if}"]
    for profile in report.get("profiles", []):
        lines += ["", f"py-spy {profile['worker']}: " + (profile.get("error") or pyspy.render(profile))]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    procs.raise_nofile_limit()

    procs.interrupt_on_signals()
    run = Run(args)
    try:
        report = asyncio.run(run.main())
    except KeyboardInterrupt:
        print("interrupted: stopping everything this run started", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError, subprocess.SubprocessError, OSError, TimeoutError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for index, process in enumerate(run.clients):
            process.join(timeout=2)
            if not process.is_alive():
                print(f"  client process {index} exited with {process.exitcode}", file=sys.stderr)
        for managed in run.workers:
            for line in managed.log_problems()[-10:]:
                print(f"  {managed.name}: {line}", file=sys.stderr)
        return 1
    finally:
        run.cleanup()
    print(render(report))
    print(f"\nJSON: {procs.write_report(report, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
