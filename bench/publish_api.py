"""What one `POST /api/publish` costs: single-event POSTs as fast as C keep-alive connections allow, one worker.

    .venv/bin/python -m bench.publish_api                       # 3,000 POSTs over 8 connections
    .venv/bin/python -m bench.publish_api --posts 5000 --concurrency 16 --rev HEAD~1

A private redis-server, one Daphne worker on it (SQLite site, a staff token), no streams: the figure is the
publish path alone (HTTP, authentication, validation, the dispatcher's round). Reports POSTs/s, the worker's
CPU per POST (from /proc, so threads included), POST latency p50/p99 and the status codes; writes JSON to
bench/results/. Bounded by --posts and --timeout; every process started is stopped by PID.
"""

import argparse
import asyncio
import signal
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs, pyspy
from bench.httpmini import HttpConnection

RESULTS = procs.ROOT / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=3000, help="POSTs measured (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="POSTs before measuring (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of the whole run, seconds")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker (all threads) while measuring")
    parser.add_argument("--profile-native", action="store_true", help="with --profile: C frames too (pauses it)")
    parser.add_argument("--rev", default="", help="the site as committed at this git revision (default: tree)")
    parser.add_argument("--name", default="publish-api")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.posts < 1 or args.concurrency < 1:
        parser.error("--posts and --concurrency must be positive")
    return args


async def post_many(port: int, token: str, count: int, concurrency: int, deadline: float) -> dict[str, Any]:
    headers = {"Authorization": f"Token {token}"}
    connections = [HttpConnection("127.0.0.1", port, headers=headers) for _ in range(concurrency)]
    statuses: Counter[int] = Counter()
    latencies: list[float] = []
    remaining = iter(range(count))

    async def loop(conn: HttpConnection) -> None:
        for seq in remaining:
            if time.monotonic() > deadline:
                statuses[0] += 1
                return
            body = {"topic": "bench.publish", "type": "bench.tick", "data": {"seq": seq}}
            started = time.perf_counter()
            status, _ = await conn.request("POST", "/api/publish", body)
            latencies.append(time.perf_counter() - started)
            statuses[status] += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(loop(conn) for conn in connections))
    finally:
        for conn in connections:
            conn.close()
    return {"secs": time.perf_counter() - started, "statuses": dict(statuses), "latency_s": latencies}


def run(args: argparse.Namespace) -> dict[str, Any]:
    deadline = time.monotonic() + args.timeout
    started_at = datetime.now(UTC)
    stamp = f"{started_at:%Y%m%dT%H%M%S}Z"
    profile_path: Path | None = None
    with tempfile.TemporaryDirectory(prefix="livesite-bench-") as tmp_name:
        tmp = Path(tmp_name)
        root = procs.ROOT
        commit = ""
        if args.rev:
            root = tmp / "site"
            commit = procs.export_tree(args.rev, root)
        redis = procs.start_redis(tmp, deadline)
        workers: list[procs.Managed] = []
        try:
            env = procs.site_env(tmp, f"redis://127.0.0.1:{redis.port}/0", root)
            staff = procs.prepare_site(env, root, deadline)
            workers = procs.start_workers(1, env, tmp, root, deadline)
            worker = workers[0]
            asyncio.run(post_many(worker.port, staff["token"], args.warmup, args.concurrency, deadline))
            spy = None
            if args.profile:
                args.results_dir.mkdir(parents=True, exist_ok=True)
                profile_path = args.results_dir / f"{args.name}-{stamp}-worker.pyspy.txt"
                spy = pyspy.start(worker.pid, profile_path, 600, native=args.profile_native)
            cpu_before, wall_before = procs.cpu_seconds(worker.pid), time.monotonic()
            measured = asyncio.run(post_many(worker.port, staff["token"], args.posts, args.concurrency, deadline))
            cpu = procs.cpu_seconds(worker.pid) - cpu_before
            wall = time.monotonic() - wall_before
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
                spy.wait(timeout=30)
            problems = worker.log_problems()
        finally:
            for process in [*workers, redis]:
                process.stop()
    ok = measured["statuses"].get(202, 0)
    latency = procs.percentiles([value * 1000 for value in measured.pop("latency_s")])
    return {
        "name": args.name,
        "started_at": started_at.isoformat(),
        "stamp": stamp,
        "profile": str(profile_path) if profile_path else None,
        "machine": procs.machine_info(),
        "rev": args.rev or "working tree",
        "commit": commit,
        "args": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "accepted": ok,
        "statuses": measured["statuses"],
        "posts_per_s": ok / measured["secs"],
        "worker_cpu_s": cpu,
        "worker_cpu_ms_per_post": cpu / max(ok, 1) * 1000,
        "worker_cores": cpu / wall,
        "latency_ms": latency,
        "log_problems": problems,
    }


def render(report: dict[str, Any]) -> str:
    latency = report["latency_ms"]
    rows = [
        ("site", f"{report['rev']} {report['commit'][:10]}".strip()),
        ("accepted", f"{report['accepted']:,} of {report['args']['posts']:,} ({report['statuses']})"),
        ("POSTs/s", f"{report['posts_per_s']:,.0f} over {report['args']['concurrency']} connections"),
        ("worker CPU per POST", f"{report['worker_cpu_ms_per_post']:.2f} ms ({report['worker_cores']:.2f} cores)"),
        ("POST latency p50 / p99 / max", f"{latency['p50']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} ms"),
        ("worker log problems", str(len(report["log_problems"]))),
    ]
    lines = [f"### {report['name']} ({report['started_at'][:19]} UTC)", "", "| measure | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    procs.interrupt_on_signals()
    report = run(args)
    print(render(report))
    if report["profile"]:
        print(pyspy.render(pyspy.summarise(Path(report["profile"]), 25, main_thread_only=False)))
    path = procs.write_report(report, args.results_dir, name=f"{args.name}-{report['stamp']}")
    print(f"\nJSON: {path}")


if __name__ == "__main__":
    main()
