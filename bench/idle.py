"""Idle connections held: N SSE streams over W workers on Redis; how many stay open and what each one costs.

    .venv/bin/python -m bench.idle --connections 100000 --workers 6
    .venv/bin/python -m bench.idle --connections 6000 --workers 6         # a warm-up size
    .venv/bin/python -m bench.idle --help                                 # every option

Starts its own redis-server and W workers (`python -m livesite.serve ... livesite.asgi:application`, as
bench/procs.py does) on free loopback ports, with a migrated SQLite file and a staff user with a DRF token in a
temp dir. It then opens N streams (`GET /realtime/connect?topics=bench.idle`) round-robin over the workers from C
load-client processes (bench/loadclient.py: raw asyncio protocols, uvloop) bound to K source addresses
127.0.0.x, and measures:

- connecting: streams held, streams/s, time to `connected`, CPU of the workers, redis and the clients;
- memory: each worker's RSS, PSS and USS (private) from /proc/PID/smaps_rollup and its open fds, before the
  first stream and after the last, per stream both as the increase (marginal) and as the whole process
  divided by its streams (all-in); the same for each client process, reported apart from the workers;
- holding: after --hold seconds (more than one keep-alive interval, so every stream has been written to), how
  many streams are still open, and the CPU an idle worker spends (keep-alives, Daphne's checker);
- a liveness probe: one event published to the streams' topic must reach every stream held.

A worker may hold at most about 19,900 streams (RLIMIT_NOFILE is 20,000 here and cannot be raised), and so may a
client process; ephemeral ports are about 28,000 per (source address, destination). The defaults split the
load accordingly. Every phase is bounded (--timeout for the whole run); everything it started is stopped by PID
at the end, also on Ctrl-C and errors. Prints Markdown tables and writes JSON to bench/results/.

The harness here (`Harness`) is also used by bench/dispatch.py.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import loadclient, procs
from bench.httpmini import HttpConnection
from bench.procs import percentiles

RESULTS = Path(__file__).resolve().parent / "results"
EVENT_TYPE = "bench.tick"  # the type bench/loadclient.py times
MAX_STREAMS_PER_PROCESS = 19_000  # RLIMIT_NOFILE is 20,000 here (hard); keep room for the process's own files
MAX_STREAMS_PER_SOURCE_AND_WORKER = 25_000  # ephemeral ports per (source, destination) are ~28,000


class BenchError(Exception):
    pass


# -- small helpers, shared with bench/dispatch.py ------------------------------------------------


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:,.1f}"


def uptime() -> str:
    """`uptime`'s own line, as the docs quote it."""
    result = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])
    git = ["git", "-C", str(procs.ROOT)]
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=False
    )
    # Uncommitted changes to the site (other engineers work in this tree): named by a hash of the diff.
    diff = subprocess.run([*git, "diff", "HEAD", "--", "realtime", "livesite"], capture_output=True, check=False)
    return {
        "cpus": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "mem_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": commit.stdout.strip(),
        "git_dirty_files": [line[3:] for line in dirty.stdout.splitlines()],
        "site_diff_sha256": hashlib.sha256(diff.stdout).hexdigest()[:12] if diff.stdout else None,
        "nofile": procs.raise_nofile_limit(),
        "date": datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
    }


def cpu_deltas(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per process of ours between two snapshots, and `others`: the rest of the machine."""
    ours = {name: round(end[name]["cpu_s"] - start[name]["cpu_s"], 3) for name in end if name in start}
    ours.pop("machine", None)
    machine_s = end["machine"]["cpu_s"] - start["machine"]["cpu_s"]
    return {**ours, "others": round(max(0.0, machine_s - sum(ours.values())), 3)}


def is_server(name: str) -> bool:
    return name == "redis" or (name[:1] in "wd" and name[1:].isdigit())


def is_client(name: str) -> bool:
    return name.startswith("client") or name == "bench"


def cpu_line(values: dict[str, float], wall: float, cores: int) -> str:
    """'server X s, client Y s over Z s wall (N % of 2 cores; others W s): per process'."""
    server = sum(value for name, value in values.items() if is_server(name))
    client = sum(value for name, value in values.items() if is_client(name))
    parts = ", ".join(f"{name} {value:.1f}" for name, value in values.items() if name != "others")
    busy = (server + client) / wall / cores * 100 if wall > 0 else 0.0
    return (
        f"server {server:.1f} s, client {client:.1f} s over {wall:.1f} s wall ({busy:.0f} % of {cores} cores; "
        f"other processes on the machine {values.get('others', 0.0):.1f} s): {parts}"
    )


def stream_request(topics: list[str]) -> bytes:
    path = "/realtime/connect" + (f"?topics={','.join(topics)}" if topics else "")
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    ).encode()


# -- the harness: servers, client processes, readings ---------------------------------------------


class Harness:
    """A private redis-server, W workers and C load-client processes, all stopped by PID in cleanup()."""

    def __init__(self, *, timeout: float, rev: str = "", keep_tmp: bool = False, prefix: str = "bench-") -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.rev = rev
        self.keep_tmp = keep_tmp
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.redis: procs.Managed | None = None
        self.workers: list[procs.Managed] = []
        self.clients: list[Any] = []  # multiprocessing.Process
        self.pipes: list[Any] = []
        self.token = ""
        self.code: dict[str, str] = {}

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run passed its --timeout of {self.timeout:.0f}s")
        return left if cap is None else min(left, cap)

    # -- servers ---------------------------------------------------------------------------------

    async def start_servers(self, count: int, names: list[str] | None = None, **env: str) -> None:
        """redis-server, the site (migrated SQLite, staff token) and `count` workers named `names`."""
        root = procs.ROOT
        if self.rev:
            root = self.tmp / "src"
            self.code = {"rev": self.rev, "commit": procs.export_tree(self.rev, root)}
        else:
            self.code = {"rev": "working tree"}
        self.redis = procs.start_redis(self.tmp, self.deadline)
        site = procs.site_env(self.tmp, f"redis://127.0.0.1:{self.redis.port}/0", root, **env)
        staff = await asyncio.to_thread(procs.prepare_site, site, root, self.deadline)
        self.token = staff["token"]
        self.workers = procs.start_workers(count, site, self.tmp, root, self.deadline)
        for worker, name in zip(self.workers, names or [], strict=False):
            worker.name = name

    def check_alive(self) -> None:
        for managed in [*self.workers, *([self.redis] if self.redis else [])]:
            if managed.process.poll() is not None:
                problems = "\n".join(managed.log_problems()[-5:])
                raise BenchError(f"{managed.name} exited with {managed.process.returncode}\n{problems}")

    def http(self, worker: procs.Managed) -> HttpConnection:
        return HttpConnection("127.0.0.1", worker.port, headers={"Authorization": f"Token {self.token}"})

    async def stats(self, workers: list[procs.Managed] | None = None) -> dict[str, dict[str, Any]]:
        """GET /realtime/stats of each worker, by name."""
        result = {}
        for worker in self.workers if workers is None else workers:
            connection = self.http(worker)
            try:
                status, body = await connection.request("GET", "/realtime/stats", timeout=self.remaining(30))
            finally:
                connection.close()
            if status != 200:
                raise BenchError(f"GET /realtime/stats on {worker.name}: {status} {body!r}")
            result[worker.name] = body
        return result

    async def publish(self, worker: procs.Managed, payload: dict[str, Any]) -> int:
        connection = self.http(worker)
        try:
            status, body = await connection.request("POST", "/api/publish", payload, timeout=self.remaining(30))
        finally:
            connection.close()
        if status != 202:
            raise BenchError(f"POST /api/publish on {worker.name}: {status} {body!r}")
        return status

    async def touch_stream(self, worker: procs.Managed, topic: str) -> None:
        """Open one stream, wait for `connected`, close it: the stream path is then loaded before the baseline."""
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
        try:
            writer.write(stream_request([topic]))
            seen = b""
            limit = time.monotonic() + self.remaining(20)
            while b"event: connected" not in seen:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.1, limit - time.monotonic()))
                if not chunk:
                    raise BenchError(f"{worker.name} closed the warm-up stream: {seen[:300]!r}")
                seen += chunk
        finally:
            writer.close()

    # -- client processes ------------------------------------------------------------------------

    def start_clients(
        self,
        shares: list[list[tuple]],
        *,
        request: bytes,
        concurrency: int,
        connect_timeout: float,
        uvloop: bool = True,
        target: Callable[[Any, dict[str, Any]], None] = loadclient.main,
    ) -> None:
        """One process per share of (port, source[, ...]) targets, each waiting for ("connect",)."""
        context = multiprocessing.get_context("spawn")
        wall_deadline = time.time() + self.remaining()
        for index, share in enumerate(shares):
            parent, child = context.Pipe()
            config = {
                "targets": share,
                "request": request,
                "concurrency": max(1, concurrency // len(shares)),
                "connect_timeout": connect_timeout,
                "deadline": wall_deadline,
                "uvloop": uvloop,
            }
            process = context.Process(target=target, args=(child, config), name=f"bench-client{index}")
            process.daemon = True
            process.start()
            child.close()
            self.clients.append(process)
            self.pipes.append(parent)

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

    async def wait_ready(self) -> None:
        for index in range(len(self.clients)):
            reply = await self.recv(index, 60)
            if reply[0] != "ready":
                raise BenchError(f"client process {index} said {reply[0]!r} instead of 'ready'")

    async def connect(self, budget: float, progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Tell every client to open its streams; their reports once all are open or failed."""
        for pipe in self.pipes:
            pipe.send(("connect",))
        tasks = [asyncio.ensure_future(self.recv(index, budget)) for index in range(len(self.clients))]
        try:
            while True:
                done, pending = await asyncio.wait(tasks, timeout=1.0)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
                if not pending:
                    break
                self.check_alive()
                if progress is not None:
                    progress()
        finally:
            for task in tasks:
                task.cancel()
        return [task.result()[1] for task in tasks]

    # -- readings --------------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        named = {worker.name: worker.pid for worker in self.workers}
        if self.redis is not None:
            named["redis"] = self.redis.pid
        for index, process in enumerate(self.clients):
            named[f"client{index}"] = process.pid
        named["bench"] = os.getpid()  # this process: it publishes and reads the stats
        return named

    def snapshot(self) -> dict[str, dict[str, Any]]:
        readings = {name: procs.sample(pid) for name, pid in self.pids().items()}
        readings["machine"] = {"cpu_s": procs.machine_cpu_seconds(), "time": time.time()}
        return readings

    def cleanup(self) -> None:
        """Stop everything this run started, by PID: client processes, workers, redis."""
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
        for managed in [*self.workers, *([self.redis] if self.redis else [])]:
            with contextlib.suppress(Exception):
                managed.stop()
        if self.keep_tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def report_failure(self, exc: BaseException) -> None:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for index, process in enumerate(self.clients):
            process.join(timeout=2)
            if not process.is_alive():
                print(f"  client process {index} exited with {process.exitcode}", file=sys.stderr)
        for managed in self.workers:
            for line in managed.log_problems()[-10:]:
                print(f"  {managed.name}: {line}", file=sys.stderr)


def run_main(harness_factory: Callable[[], Any], render: Callable[[dict[str, Any]], str], results_dir: Path) -> int:
    """Run `harness_factory().main()` with signals handled and cleanup guaranteed; print and save the report."""
    procs.raise_nofile_limit()

    procs.interrupt_on_signals()
    run = harness_factory()
    try:
        report = asyncio.run(run.main())
    except KeyboardInterrupt:
        print("interrupted: stopping everything this run started", file=sys.stderr)
        return 130
    except (BenchError, RuntimeError, subprocess.SubprocessError, OSError, TimeoutError) as exc:
        run.report_failure(exc)
        return 1
    finally:
        run.cleanup()
    print(render(report))
    print(f"\nJSON: {procs.write_report(report, results_dir)}")
    return 0


# -- the idle benchmark -----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=100_000, help="SSE streams to open (default 100,000)")
    parser.add_argument("--workers", type=int, default=6, help="workers (default 6: 16,667 streams each)")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    parser.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: 1 per client)")
    parser.add_argument("--topic", default="bench.idle", help="the topic every stream reads (the probe's)")
    parser.add_argument("--connect-concurrency", type=int, default=240, help="streams being opened at once, in all")
    parser.add_argument("--connect-timeout", type=float, default=60.0, help="per stream, until 'connected'")
    parser.add_argument("--hold", type=float, default=20.0, help="seconds to hold every stream before counting again")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds between phases before reading memory")
    parser.add_argument("--drain", type=float, default=60.0, help="max seconds for the probe to reach every stream")
    parser.add_argument("--no-probe", action="store_true", help="skip the liveness probe (one broadcast event)")
    parser.add_argument("--timeout", type=float, default=540.0, help="bound of the whole run, seconds (default 540)")
    parser.add_argument("--name", default="", help="results name (default idle-w<W>-c<N>)")
    parser.add_argument("--rev", default="", help="run the site as committed at this git revision (default: tree)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in the client")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, database)")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.connections < 1:
        parser.error("--workers and --connections must be positive")
    if math.ceil(args.connections / args.workers) > MAX_STREAMS_PER_PROCESS:
        parser.error(f"at most {MAX_STREAMS_PER_PROCESS:,} streams per worker (20,000 open files): raise --workers")
    args.clients = args.clients or math.ceil(args.connections / MAX_STREAMS_PER_PROCESS)
    if math.ceil(args.connections / args.clients) > MAX_STREAMS_PER_PROCESS:
        parser.error(f"at most {MAX_STREAMS_PER_PROCESS:,} streams per client process: raise --clients")
    needed = math.ceil(args.connections / args.workers / MAX_STREAMS_PER_SOURCE_AND_WORKER)
    args.sources = args.sources or max(needed, args.clients)
    if not needed <= args.sources <= 254:
        parser.error(f"--sources must be within {needed}..254 (ephemeral ports per source and worker)")
    args.name = args.name or f"idle-w{args.workers}-c{args.connections}"
    return args


class IdleRun(Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(timeout=args.timeout, rev=args.rev, keep_tmp=args.keep_tmp, prefix="bench-idle-")
        self.args = args
        self.progress_log: list[dict[str, Any]] = []

    def shares(self) -> list[list[tuple[int, str]]]:
        """Stream i goes to worker i mod W; client and source rotate over consecutive rounds of W streams."""
        args = self.args
        sources = [f"127.0.0.{index + 1}" for index in range(args.sources)]
        shares: list[list[tuple[int, str]]] = [[] for _ in range(args.clients)]
        for index in range(args.connections):
            worker = self.workers[index % args.workers]
            lap = index // args.workers
            shares[lap % args.clients].append((worker.port, sources[lap % len(sources)]))
        return shares

    def progress(self, started: float, baseline: dict[str, Any]) -> None:
        """While connecting: streams open per worker, from its fds (one per stream), every second."""
        fds = {worker.name: procs.open_fds(worker.pid) - baseline[worker.name]["fds"] for worker in self.workers}
        elapsed = time.monotonic() - started
        self.progress_log.append({"t": round(elapsed, 1), "streams_by_fds": fds})
        if len(self.progress_log) % 5 == 0:
            print(f"  {elapsed:5.0f} s: ~{sum(fds.values()):,} streams open", file=sys.stderr)

    async def probe(self, held: int) -> dict[str, Any]:
        """Publish one event to every stream's topic; count the streams it reached and how long it took."""
        await self.ask_all(("expect", 1), 30)
        sent_at = time.time()
        event = {"topic": self.args.topic, "type": EVENT_TYPE, "data": {"seq": 0, "sent_at": sent_at}}
        await self.publish(self.workers[0], event)
        limit = time.monotonic() + self.args.drain
        received = 0
        while time.monotonic() < limit:
            replies = await self.ask_all(("status",), 30)
            received = sum(reply[1]["received"] for reply in replies)
            if received >= held:
                break
            await asyncio.sleep(min(0.25, self.remaining()))
        return {"sent_at": sent_at, "received_polled": received}

    async def main(self) -> dict[str, Any]:
        args = self.args
        report: dict[str, Any] = {
            "stamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
            "machine": machine(),
            "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
            "uptime_start": uptime(),
            "loadavg_start": os.getloadavg(),
        }
        await self.start_servers(args.workers)
        report["code"] = {"commit": report["machine"]["git_commit"], **self.code}
        # Warm-up: every worker starts its realtime Worker, serves the publish path and one whole stream.
        for worker in self.workers:
            await self.touch_stream(worker, args.topic)
        await self.publish(
            self.workers[0], {"topic": "bench.warmup", "type": EVENT_TYPE, "data": {"seq": -1, "sent_at": 0}}
        )
        await self.stats()
        shares = self.shares()
        self.start_clients(
            shares,
            request=stream_request([args.topic]),
            concurrency=args.connect_concurrency,
            connect_timeout=args.connect_timeout,
            uvloop=not args.no_uvloop,
        )
        await self.wait_ready()
        await asyncio.sleep(args.settle)
        self.check_alive()
        baseline = self.snapshot()  # with the client processes alive: PSS divides shared pages among users

        print(f"opening {args.connections:,} streams over {args.workers} workers ...", file=sys.stderr)
        started = time.monotonic()
        budget = self.remaining()
        results = await self.connect(budget, lambda: self.progress(started, baseline))
        report["connect"] = self.summarise_connect(results, shares)
        held = report["connect"]["held"]
        if held == 0:
            raise BenchError(f"no stream connected: {report['connect']['errors']}")
        connected_at = self.snapshot()  # CPU of the connect phase ends here
        await asyncio.sleep(args.settle)
        self.check_alive()
        after_connect = self.snapshot()
        stats_connected = await self.stats()

        print(f"holding {held:,} streams for {args.hold:.0f} s ...", file=sys.stderr)
        hold_start = self.snapshot()
        await asyncio.sleep(self.remaining(args.hold))
        after_hold = self.snapshot()
        status = [reply[1] for reply in await self.ask_all(("status",), 60)]
        report["hold"] = {
            "secs": args.hold,
            "open": sum(item["open"] for item in status),
            "closed": sum(item["lost"] for item in status),
            "resets": sum(item["resets"] for item in status),
        }

        if not args.no_probe:
            print("probe: one event to every stream ...", file=sys.stderr)
            probe_start = self.snapshot()
            report["probe"] = await self.probe(report["hold"]["open"])
            probe_end = self.snapshot()
            report["probe"]["cpu"] = cpu_deltas(probe_start, probe_end)
            report["probe"]["wall_s"] = probe_end["bench"]["time"] - probe_start["bench"]["time"]
        stats_end = await self.stats()
        report["uptime_end"] = uptime()
        report["loadavg_end"] = os.getloadavg()

        results = [reply[1] for reply in await self.ask_all(("stop",), 120)]
        if not args.no_probe:
            last = [array("d", result["last"])[0] for result in results if result["counts"] and result["counts"][0]]
            first = [array("d", result["first"])[0] for result in results if result["counts"] and result["counts"][0]]
            report["probe"]["received"] = sum(result["counts"][0] for result in results if result["counts"])
            report["probe"]["expected"] = report["hold"]["open"]
            sent = report["probe"]["sent_at"]
            report["probe"]["first_s"] = min(first) - sent if first else None
            report["probe"]["complete_s"] = max(last) - sent if last else None
        report["clients"] = [
            {key: result[key] for key in ("max_rss_kb", "cpu_s", "comments", "open", "lost")} for result in results
        ]
        report["samples"] = {
            "baseline": baseline,
            "connected": connected_at,
            "after_connect": after_connect,
            "hold_start": hold_start,
            "after_hold": after_hold,
        }
        report["progress"] = self.progress_log
        report["worker_stats"] = {"after_connect": stats_connected, "end": stats_end}
        report["cpu"] = {
            "connect": cpu_deltas(baseline, connected_at),
            "connect_wall_s": connected_at["bench"]["time"] - baseline["bench"]["time"],
            "hold": cpu_deltas(hold_start, after_hold),
            "hold_wall_s": after_hold["bench"]["time"] - hold_start["bench"]["time"],
        }
        report["memory"] = self.memory(baseline, after_connect, after_hold, stats_connected, report["connect"])
        report["log_problems"] = {
            managed.name: managed.log_problems()[-20:] for managed in self.workers if managed.log_problems()
        }
        return report

    def summarise_connect(self, results: list[dict[str, Any]], shares: list[list]) -> dict[str, Any]:
        errors: Counter[str] = Counter()
        connect_secs = array("d")
        for result in results:
            errors.update(result["errors"])
            connect_secs.frombytes(result["connect_secs"])
        held = sum(result["held"] for result in results)
        wall = max(result["ended"] for result in results) - min(result["started"] for result in results)
        return {
            "requested": self.args.connections,
            "per_client": [len(share) for share in shares],
            "held_per_client": [result["held"] for result in results],
            "held": held,
            "failed": sum(result["failed"] for result in results),
            "errors": dict(errors),
            "wall_s": wall,
            "rate_per_s": held / wall if wall > 0 else None,
            "time_to_connected_s": percentiles(connect_secs, (50, 90, 99)),
        }

    def memory(
        self,
        baseline: dict[str, Any],
        connected: dict[str, Any],
        held: dict[str, Any],
        stats: dict[str, dict[str, Any]],
        connect: dict[str, Any],
    ) -> dict[str, Any]:
        """Per worker and per client process: memory and fds before, after connecting and after holding."""
        rows = []
        for worker in self.workers:
            streams = stats[worker.name]["connections"]
            rows.append(self._memory_row(worker.name, streams, baseline, connected, held))
        clients = []
        for index, streams in enumerate(connect["held_per_client"]):
            clients.append(self._memory_row(f"client{index}", streams, baseline, connected, held))
        total = {
            "streams": sum(row["streams"] for row in rows),
            **{
                f"{kind}_kb": [sum(row[f"{kind}_kb"][phase] for row in rows) for phase in range(3)]
                for kind in ("rss", "pss", "uss")
            },
        }
        for kind in ("rss", "pss", "uss"):
            values = total[f"{kind}_kb"]
            total[f"{kind}_per_stream_kb"] = (values[1] - values[0]) / total["streams"] if total["streams"] else None
            total[f"{kind}_all_in_per_stream_kb"] = values[1] / total["streams"] if total["streams"] else None
        return {"workers": rows, "total": total, "clients": clients}

    @staticmethod
    def _memory_row(name: str, streams: int, *phases: dict[str, Any]) -> dict[str, Any]:
        row: dict[str, Any] = {"name": name, "streams": streams}
        for kind in ("rss", "pss", "uss", "anon"):
            row[f"{kind}_kb"] = [phase[name][f"{kind}_kb"] for phase in phases]
            values = row[f"{kind}_kb"]
            row[f"{kind}_per_stream_kb"] = (values[1] - values[0]) / streams if streams else None
            row[f"{kind}_all_in_per_stream_kb"] = values[1] / streams if streams else None
        row["fds"] = [phase[name]["fds"] for phase in phases]
        return row


def code_label(report: dict[str, Any]) -> str:
    """The commit the workers ran, and for the working tree the hash of its uncommitted site diff, if any."""
    code = report["code"]
    label = f"{code.get('rev')} {code.get('commit', '')[:10]}"
    diff = report["machine"].get("site_diff_sha256")
    if code.get("rev") == "working tree" and diff:
        label += f" + uncommitted changes to realtime/ or livesite/ (diff sha256 {diff})"
    return label


def kib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} KiB"


def render(report: dict[str, Any]) -> str:
    args = report["config"]
    cores = report["machine"]["nproc"]
    conn, hold, cpu = report["connect"], report["hold"], report["cpu"]
    total = report["memory"]["total"]
    errors = ", ".join(f"{name} x{count}" for name, count in conn["errors"].items()) or "none"
    ttc = conn["time_to_connected_s"]
    rss_kb = total["rss_per_stream_kb"]
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {code_label(report)}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| streams held | {conn['held']:,} of {conn['requested']:,} ({args['workers']} workers, {args['clients']} "
        f"client process(es), {args['sources']} source address(es)); failed: {errors} |",
        f"| connect | {conn['wall_s']:.1f} s, {conn['rate_per_s'] or 0:,.0f} streams/s; time to `connected` "
        f"p50 {ms(ttc['p50'])} ms, p90 {ms(ttc['p90'])} ms, p99 {ms(ttc['p99'])} ms, max {ms(ttc['max'])} ms |",
        f"| still open after holding {hold['secs']:.0f} s | {hold['open']:,} (closed {hold['closed']:,}, "
        f"resets {hold['resets']}) |",
    ]
    probe = report.get("probe")
    if probe:
        lines.append(
            f"| probe: one event to every stream | reached {probe['received']:,} of {probe['expected']:,}; "
            f"first after {ms(probe['first_s'])} ms, last after {ms(probe['complete_s'])} ms |"
        )
    lines += [
        f"| worker memory per stream (all workers, increase over the baseline) | RSS {kib(rss_kb)} "
        f"({(rss_kb or 0) * 1.024:.1f} kB), PSS {kib(total['pss_per_stream_kb'])}, "
        f"USS {kib(total['uss_per_stream_kb'])} |",
        f"| worker memory per stream, all-in (whole RSS / streams) | {kib(total['rss_all_in_per_stream_kb'])} "
        f"({mib(total['rss_kb'][1])} MiB RSS for {total['streams']:,} streams) |",
        f"| CPU while connecting | {cpu_line(cpu['connect'], cpu['connect_wall_s'], cores)} |",
        f"| CPU while holding (idle: keep-alives, Daphne's checker) | "
        f"{cpu_line(cpu['hold'], cpu['hold_wall_s'], cores)} |",
    ]
    if probe:
        lines.append(f"| CPU during the probe | {cpu_line(probe['cpu'], probe['wall_s'], cores)} |")
    lines += [
        f"| load average (1/5/15 min) start -> end | {' / '.join(f'{v:.2f}' for v in report['loadavg_start'])} -> "
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_end'])} |",
        "",
        "| worker | streams | RSS MiB before -> connected -> held | RSS/stream | PSS MiB before -> connected | "
        "PSS/stream | USS/stream | RSS all-in/stream | fds before -> connected -> held | CPU s connect / hold |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in report["memory"]["workers"]:
        name = row["name"]
        lines.append(
            f"| {name} | {row['streams']:,} | {' -> '.join(mib(v) for v in row['rss_kb'])} | "
            f"{kib(row['rss_per_stream_kb'])} | {' -> '.join(mib(v) for v in row['pss_kb'][:2])} | "
            f"{kib(row['pss_per_stream_kb'])} | {kib(row['uss_per_stream_kb'])} | "
            f"{kib(row['rss_all_in_per_stream_kb'])} | {' -> '.join(str(v) for v in row['fds'])} | "
            f"{cpu['connect'].get(name, 0):.1f} / {cpu['hold'].get(name, 0):.1f} |"
        )
    lines += [
        f"| all | {total['streams']:,} | {' -> '.join(mib(v) for v in total['rss_kb'])} | "
        f"{kib(total['rss_per_stream_kb'])} | {' -> '.join(mib(v) for v in total['pss_kb'][:2])} | "
        f"{kib(total['pss_per_stream_kb'])} | {kib(total['uss_per_stream_kb'])} | "
        f"{kib(total['rss_all_in_per_stream_kb'])} | | |",
        "",
        "Load client (not part of the server's memory):",
        "",
        "| client | streams | RSS MiB before -> connected | RSS/stream | USS/stream | max RSS MiB | CPU s "
        "connect / hold / total | keep-alive comments received |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for row, extra in zip(report["memory"]["clients"], report["clients"], strict=True):
        name = row["name"]
        lines.append(
            f"| {name} | {row['streams']:,} | {' -> '.join(mib(v) for v in row['rss_kb'][:2])} | "
            f"{kib(row['rss_per_stream_kb'])} | {kib(row['uss_per_stream_kb'])} | {mib(extra['max_rss_kb'])} | "
            f"{cpu['connect'].get(name, 0):.1f} / {cpu['hold'].get(name, 0):.1f} / {extra['cpu_s']:.1f} | "
            f"{extra['comments']:,} |"
        )
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_main(lambda: IdleRun(args), render, args.results_dir)


if __name__ == "__main__":
    sys.exit(main())
