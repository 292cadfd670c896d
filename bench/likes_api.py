"""Likes path benchmark: likes accepted per second through the API, and like-to-viewer latency with 1,000 viewers.

    .venv/bin/python -m bench.likes_api --db sqlite --workers 2
    .venv/bin/python -m bench.likes_api --db postgres --workers 2

Starts its own redis-server and W Daphne workers (`python -m livesite.serve`) on free loopback ports, on a temp
SQLite file (`--db sqlite`) or on a fresh, uniquely named PostgreSQL database on 127.0.0.1:5432 (`--db
postgres`; dropped at the end), migrated, with --members members (each a DRF token) and fresh live videos.

Phase 1, throughput: C keep-alive connections (round-robin over the workers, each a member's token) POST
`/api/videos/{id}/likes` back to back, round-robin over --videos videos, until --likes likes were sent or
--seconds passed. Reports likes/s accepted (201), POST latency, errors, and checks that the database holds as
many Like rows as were accepted for each video, that each video's like_count (DB and API) equals them, and that
the counts the API answered are exactly 1..n for each video.

Phase 2, end to end: --viewers SSE streams (bench/loadclient.py, round-robin over the workers) subscribed with
`?topics=video.{id}.likes` to one fresh video; likes are POSTed at --e2e-rate per second (--e2e-likes of them,
several members, round-robin over the workers). Likes are coalesced by the site (LIKES_COALESCE_MS, 250 ms by
default), so viewers receive far fewer `like.created` events than likes. For each like (its POST answered with
its total n) the announcing event is the one whose (count - covered, count] holds n; reported: like POST sent
-> receipt at each viewer, event `published_at` -> receipt, the events each viewer got against the likes
made, and per viewer that the last event's `count` is the final total, that the `covered` add up to it, that
counts only rise, and no delivery lost or duplicated.

CPU of every process (workers, redis, client processes, and the PostgreSQL server as a whole) is read from
/proc per phase. Prints Markdown tables and writes JSON to bench/results/<name>-<UTC timestamp>.json. Every
process it started is stopped by PID, also on Ctrl-C, errors and the --timeout.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs, pyspy
from bench.httpmini import HttpConnection, HttpError
from bench.loadclient import ClientProcess

RESULTS = Path(__file__).resolve().parent / "results"
LIKE_CREATED = "like.created"

SEED_SCRIPT = """
import json, sys
import django
django.setup()
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from likes.models import LiveVideo
members, videos = int(sys.argv[1]), int(sys.argv[2])
owner = User.objects.get(username="bench")
found = []
for index in range(members):
    user, _ = User.objects.get_or_create(username=f"member{index}", defaults={"first_name": f"Member {index}"})
    found.append({"id": user.pk, "token": Token.objects.get_or_create(user=user)[0].key})
ids = []
for index in range(videos):
    defaults = {"title": f"Bench {index}", "owner": owner}
    video, _ = LiveVideo.objects.get_or_create(slug=f"bench-{index}", defaults=defaults)
    ids.append(video.pk)
print(json.dumps({"members": found, "videos": ids}))
"""


class BenchError(Exception):
    pass


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server (no db name)")
    parser.add_argument("--workers", type=int, default=2, help="Daphne workers (default 2)")
    parser.add_argument("--members", type=int, default=20, help="members liking (default 20)")
    parser.add_argument("--phase", choices=("both", "throughput", "e2e"), default="both")
    group = parser.add_argument_group("phase 1: throughput")
    group.add_argument("--videos", type=int, default=4, help="videos liked round-robin (default 4)")
    group.add_argument("--concurrency", type=int, default=16, help="keep-alive connections (default 16)")
    group.add_argument("--likes", type=int, default=5000, help="at most this many likes (default 5000)")
    group.add_argument("--seconds", type=float, default=15.0, help="for at most this long (default 15)")
    group = parser.add_argument_group("phase 2: like-to-viewer latency")
    group.add_argument("--viewers", type=int, default=1000, help="SSE streams on the video (default 1000)")
    group.add_argument("--e2e-rate", type=float, default=50.0, help="likes POSTed per second (default 50)")
    group.add_argument("--e2e-likes", type=int, default=500, help="likes POSTed (default 500)")
    group.add_argument("--e2e-connections", type=int, default=8, help="keep-alive connections of the liker")
    parser.add_argument("--profile", type=int, default=0, help="py-spy w0 for this many seconds of phase 1")
    parser.add_argument("--coalesce-ms", type=int, default=0, help="LIKES_COALESCE_MS (default: the site's, 250)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for the last events")
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of the whole run, seconds")
    parser.add_argument("--rev", default="", help="run the site as committed at this revision (default: work tree)")
    parser.add_argument("--name", default="", help="results name (default likes-<db>-w<W>)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, SQLite file)")
    args = parser.parse_args(argv)
    positive = (args.workers, args.members, args.videos, args.concurrency, args.likes, args.seconds)
    if min(positive) <= 0 or min(args.viewers, args.e2e_likes, args.e2e_connections) <= 0 or args.e2e_rate <= 0:
        parser.error("counts, rates and durations must be positive")
    args.name = args.name or f"likes-{args.db}-w{args.workers}"
    return args


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


# -- the PostgreSQL server's CPU (its backends come and go; the postmaster reaps them) -------------


def _stat_fields(pid: int) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return handle.read().rpartition(b")")[2].split()


def postgres_cpu_seconds(postmaster: int) -> float | None:
    """CPU of the whole PostgreSQL server: the postmaster, its reaped children, and its live children.

    Whole server: other engineers' databases on it count too (their share shows in `others` elsewhere).
    """
    try:
        fields = _stat_fields(postmaster)
    except OSError:
        return None
    # utime, stime, cutime, cstime are fields 14-17 (1-based): 11-14 after "pid (comm)".
    total = sum(int(value) for value in fields[11:15])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                child = _stat_fields(int(entry))
                if int(child[1]) == postmaster:
                    total += int(child[11]) + int(child[12])
    return total / procs.CLK_TCK


# -- the run -------------------------------------------------------------------------------------


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = time.monotonic() + args.timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-likes-"))
        self.redis: procs.Managed | None = None
        self.workers: list[procs.Managed] = []
        self.viewers: ClientProcess | None = None
        self.profiler: subprocess.Popen | None = None
        self.pg_db = ""
        self.pg_admin: Any = None  # a psycopg connection to the `postgres` database, autocommit
        self.postmaster = 0
        self.staff: dict[str, Any] = {}
        self.members: list[dict[str, Any]] = []
        self.videos: list[int] = []
        self.report: dict[str, Any] = {}
        # video id -> likes accepted (201) by this run, for the final check
        self.accepted: Counter[int] = Counter()

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run passed its --timeout of {self.args.timeout:.0f}s")
        return left if cap is None else min(left, cap)

    def check_alive(self) -> None:
        for managed in [*self.workers, *([self.redis] if self.redis else [])]:
            if managed.process.poll() is not None:
                problems = "\n".join(managed.log_problems()[-5:])
                raise BenchError(f"{managed.name} exited with {managed.process.returncode}\n{problems}")

    def snapshot(self) -> dict[str, Any]:
        pids = {worker.name: worker.pid for worker in self.workers}
        if self.redis is not None:
            pids["redis"] = self.redis.pid
        if self.viewers is not None:
            pids["viewers"] = self.viewers.pid
        pids["client"] = os.getpid()
        readings: dict[str, Any] = {name: procs.sample(pid)["cpu_s"] for name, pid in pids.items()}
        if self.postmaster:
            readings["postgres"] = postgres_cpu_seconds(self.postmaster)
        readings["machine"] = procs.machine_cpu_seconds()
        readings["time"] = time.time()
        return readings

    @staticmethod
    def cpu(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """CPU seconds per process between two snapshots, and `others`: the rest of the machine."""
        names = [name for name in after if name not in ("machine", "time") and before.get(name) is not None]
        ours = {name: round(after[name] - before[name], 3) for name in names if after[name] is not None}
        machine = after["machine"] - before["machine"]
        return {
            "wall_s": round(after["time"] - before["time"], 3),
            "per_process": ours,
            "workers_s": round(sum(v for k, v in ours.items() if k.startswith("w")), 3),
            "clients_s": round(ours.get("client", 0) + ours.get("viewers", 0), 3),
            "others_s": round(max(0.0, machine - sum(ours.values())), 3),
        }

    def connection(self, port: int, token: str) -> HttpConnection:
        return HttpConnection("127.0.0.1", port, headers={"Authorization": f"Token {token}"})

    # -- servers --------------------------------------------------------------------------------

    def create_pg_database(self) -> str:
        import psycopg  # Imported here: only with --db postgres.

        self.pg_admin = psycopg.connect(f"{self.args.pg}/postgres", autocommit=True, connect_timeout=10)
        name = f"livesite_bench_{os.getpid()}_{secrets.token_hex(4)}"
        self.pg_admin.execute(f'CREATE DATABASE "{name}"')
        self.pg_db = name
        with contextlib.suppress(Exception):
            data_dir = self.pg_admin.execute("SHOW data_directory").fetchone()[0]
            self.postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
        return f"{self.args.pg}/{name}"

    async def start_servers(self) -> None:
        args = self.args
        root = procs.ROOT
        if args.rev:
            root = self.tmp / "src"
            self.report["code"] = {"rev": args.rev, "commit": procs.export_tree(args.rev, root)}
        else:
            self.report["code"] = {"rev": "working tree", "commit": self.report["machine"]["git_commit"]}
        self.redis = procs.start_redis(self.tmp, self.deadline)
        overrides = {}
        if args.db == "postgres":
            overrides["DATABASE_URL"] = self.create_pg_database()
            self.report["database"] = {"engine": "postgres", "name": self.pg_db, "postmaster": self.postmaster}
        else:
            self.report["database"] = {"engine": "sqlite", "path": str(self.tmp / "db.sqlite3")}
        if args.coalesce_ms:
            overrides["LIKES_COALESCE_MS"] = str(args.coalesce_ms)
        self.env = procs.site_env(self.tmp, f"redis://127.0.0.1:{self.redis.port}/0", root, **overrides)
        self.staff = await asyncio.to_thread(procs.prepare_site, self.env, root, self.deadline)
        # Videos: phase 1's, then phase 2's own, then one for warming up.
        seeded = await asyncio.to_thread(self.seed, root, args.members, args.videos + 2)
        self.members, self.videos = seeded["members"], seeded["videos"]
        self.workers = procs.start_workers(args.workers, self.env, self.tmp, root, self.deadline)

    def seed(self, root: Path, members: int, videos: int) -> dict[str, Any]:
        step = [procs.PYTHON, "-c", SEED_SCRIPT, str(members), str(videos)]
        result = subprocess.run(
            step, cwd=root, env=self.env, capture_output=True, text=True, check=False, timeout=self.remaining(120)
        )
        if result.returncode != 0:
            raise BenchError(f"seeding failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    async def warm_up(self) -> None:
        """Every worker: stats (starts its real-time worker) and two likes of the warm-up video."""
        video = self.videos[-1]
        for index, worker in enumerate(self.workers):
            connection = self.connection(worker.port, self.members[index % len(self.members)]["token"])
            try:
                for _ in range(2):
                    status, body = await connection.request("POST", f"/api/videos/{video}/likes", timeout=30)
                    if status != 201:
                        raise BenchError(f"warm-up like on {worker.name}: {status} {body!r}")
                    self.accepted[video] += 1
            finally:
                connection.close()
        await self.worker_stats()

    async def worker_stats(self) -> list[dict[str, Any]]:
        result = []
        for worker in self.workers:
            connection = self.connection(worker.port, self.staff["token"])
            try:
                status, body = await connection.request("GET", "/realtime/stats", timeout=self.remaining(10))
            finally:
                connection.close()
            if status != 200:
                raise BenchError(f"GET /realtime/stats on {worker.name}: {status} {body!r}")
            result.append(body)
        return result

    # -- phase 1: throughput --------------------------------------------------------------------

    async def throughput(self) -> dict[str, Any]:
        args = self.args
        loop = asyncio.get_running_loop()
        videos = self.videos[: args.videos]
        connections = [
            self.connection(self.workers[i % len(self.workers)].port, self.members[i % len(self.members)]["token"])
            for i in range(args.concurrency)
        ]
        latencies = array("d")
        statuses: Counter[str] = Counter()
        counts: dict[int, list[int]] = {video: [] for video in videos}
        issued = 0
        stop_at = loop.time() + min(args.seconds, self.remaining())
        first_sent = time.time()
        last_done = first_sent

        async def drive(connection: HttpConnection) -> None:
            nonlocal issued, last_done
            while issued < args.likes and loop.time() < stop_at:
                video = videos[issued % len(videos)]
                issued += 1
                started = time.perf_counter()
                try:
                    status, body = await connection.request("POST", f"/api/videos/{video}/likes", timeout=30)
                except (HttpError, OSError, TimeoutError) as exc:
                    statuses[type(exc).__name__] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                last_done = time.time()
                statuses[str(status)] += 1
                if status == 201:
                    counts[video].append(body["count"])

        pg_before = await asyncio.to_thread(self.pg_stats)
        profiler, profile_path = self.start_profiler()
        before = self.snapshot()
        try:
            await asyncio.wait_for(
                asyncio.gather(*(drive(connection) for connection in connections)), self.remaining(args.seconds + 60)
            )
        finally:
            for connection in connections:
                connection.close()
        after = self.snapshot()
        await asyncio.sleep(1.0)  # PostgreSQL 15 flushes its statistics at most once a second
        pg_after = await asyncio.to_thread(self.pg_stats)
        profile = await self.finish_profiler(profiler, profile_path)
        accepted = statuses.get("201", 0)
        for video, answered in counts.items():
            self.accepted[video] += len(answered)
        wall = last_done - first_sent
        return {
            "sent": issued,
            "statuses": dict(statuses),
            "accepted": accepted,
            "errors": issued - accepted,
            "wall_s": wall,
            "likes_per_s": accepted / wall if wall > 0 else None,
            "latency_s": procs.percentiles(latencies),
            # The API answers each like with its video's total: exactly 1..n per fresh video, each once.
            "answered_counts_exact": all(sorted(c) == list(range(1, len(c) + 1)) for c in counts.values()),
            "per_video": {video: len(answered) for video, answered in counts.items()},
            "cpu": self.cpu(before, after),
            "pg_stats": {key: pg_after[key] - pg_before[key] for key in pg_after} if pg_after else None,
            "profile": profile,
        }

    def start_profiler(self) -> tuple[subprocess.Popen | None, Path | None]:
        """py-spy on w0 (all threads: Django's sync views run off the main one) with --profile."""
        if not self.args.profile:
            return None, None
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        worker = self.workers[0]
        path = self.args.results_dir / f"{self.args.name}-{self.report['stamp']}-{worker.name}-{worker.pid}.pyspy.txt"
        process = self.profiler = pyspy.start(worker.pid, path, self.args.profile)
        if process is None:
            print("py-spy is not installed: no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
        return process, path

    async def finish_profiler(self, process: subprocess.Popen | None, path: Path | None) -> dict[str, Any] | None:
        if process is None or path is None:
            return None
        try:
            await asyncio.wait_for(asyncio.to_thread(process.wait), self.remaining(self.args.profile + 30))
        except TimeoutError:
            process.kill()
            process.wait(timeout=10)
        if process.returncode != 0 or not path.exists():
            error = process.stderr.read().decode(errors="replace")[-300:] if process.stderr else ""
            return {"error": f"py-spy exited {process.returncode}: {error}"}
        return {"path": str(path), **pyspy.summarise(path, 25, main_thread_only=False)}

    def pg_stats(self) -> dict[str, int] | None:
        """This database's sessions opened and transactions so far (pg_stat_database), with --db postgres."""
        if not self.pg_db:
            return None
        query = "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s"
        self.pg_admin.execute("SELECT pg_stat_clear_snapshot()")
        sessions, commits, rollbacks = self.pg_admin.execute(query, (self.pg_db,)).fetchone()
        return {"sessions": sessions, "xact_commit": commits, "xact_rollback": rollbacks}

    # -- phase 2: like-to-viewer latency --------------------------------------------------------

    async def open_viewers(self, video: int) -> dict[str, Any]:
        args = self.args
        request = (
            f"GET /realtime/connect?topics=video.{video}.likes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        config = {
            "targets": [(self.workers[i % len(self.workers)].port, "127.0.0.1") for i in range(args.viewers)],
            "request": request.encode(),
            "concurrency": 100,
            "connect_timeout": 30.0,
            "deadline": time.time() + self.remaining(),
            "watch_types": [LIKE_CREATED],
        }
        self.viewers = ClientProcess(config, name="viewers")
        reply = await self.viewers.recv(self.remaining(60))
        if reply[0] != "ready":
            raise BenchError(f"the viewers' process said {reply[0]!r}")
        reply = await self.viewers.ask(("connect",), self.remaining(30 + args.viewers / 50))
        result = reply[1]
        connect_secs = array("d", result["connect_secs"])
        return {
            "requested": args.viewers,
            "held": result["held"],
            "errors": result["errors"],
            "wall_s": result["ended"] - result["started"],
            "time_to_connected_s": procs.percentiles(connect_secs),
        }

    async def like_steadily(self, video: int) -> dict[str, Any]:
        """POST --e2e-likes likes of `video` at --e2e-rate per second; each like's send time and answered total."""
        args = self.args
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        connections = [
            self.connection(self.workers[i % len(self.workers)].port, self.members[i % len(self.members)]["token"])
            for i in range(args.e2e_connections)
        ]
        for connection in connections:
            pool.put_nowait(connection)
        sent_at = [0.0] * args.e2e_likes
        post_s = [0.0] * args.e2e_likes
        totals = [0] * args.e2e_likes
        statuses: Counter[str] = Counter()

        async def one(seq: int, connection: HttpConnection) -> None:
            sent_at[seq] = now = time.time()
            try:
                status, body = await connection.request("POST", f"/api/videos/{video}/likes", timeout=30)
                statuses[str(status)] += 1
                if status == 201:
                    totals[seq] = body["count"]
            except (HttpError, OSError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            finally:
                post_s[seq] = time.time() - now
                pool.put_nowait(connection)

        tasks = []
        start = loop.time() + 0.05
        try:
            for seq in range(args.e2e_likes):
                delay = start + seq / args.e2e_rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, self.remaining()))
                connection = await asyncio.wait_for(pool.get(), self.remaining(30))
                tasks.append(asyncio.create_task(one(seq, connection)))
            await asyncio.wait_for(asyncio.gather(*tasks), self.remaining(60))
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                connection.close()
        span = max(sent_at) - min(sent_at)
        accepted = statuses.get("201", 0)
        self.accepted[video] += accepted
        return {
            "sent": args.e2e_likes,
            "statuses": dict(statuses),
            "accepted": accepted,
            "errors": args.e2e_likes - accepted,
            "rate_target": args.e2e_rate,
            "rate_achieved": (args.e2e_likes - 1) / span if span > 0 else None,
            "post_latency_s": procs.percentiles(post_s),
            "sent_at": sent_at,
            "totals": totals,
        }

    async def drain(self, final_total: int, held: int) -> dict[str, Any]:
        """Wait until every viewer has the event carrying the final total (and every event), or --drain s."""
        limit = time.monotonic() + self.args.drain
        started = time.monotonic()
        while True:
            status = (await self.viewers.ask(("status",), self.remaining(30)))[1]
            events = status.get("watched_events", [])
            final = [n for _, _, data, n in events if json.loads(data)["data"]["count"] == final_total]
            complete = bool(final) and final[0] >= held and all(n >= held for *_, n in events)
            if complete or time.monotonic() > limit:
                return {"complete": complete, "waited_s": time.monotonic() - started, "status": status}
            await asyncio.sleep(0.1)

    async def end_to_end(self) -> dict[str, Any]:
        args = self.args
        video = self.videos[args.videos]
        result: dict[str, Any] = {"video": video}
        result["connect"] = await self.open_viewers(video)
        held = result["connect"]["held"]
        if held == 0:
            raise BenchError(f"no viewer connected: {result['connect']['errors']}")
        await asyncio.sleep(args.settle)
        self.check_alive()
        print(f"liking video {video} {args.e2e_likes} times at {args.e2e_rate}/s, {held} viewers ...", file=sys.stderr)
        before = self.snapshot()
        result["likes"] = likes = await self.like_steadily(video)
        final_total = max(likes["totals"])
        result["drain"] = await self.drain(final_total, held)
        after = self.snapshot()
        result["cpu"] = self.cpu(before, after)
        result["worker_stats"] = await self.worker_stats()
        raw = (await self.viewers.ask(("stop",), self.remaining(60)))[1]
        result["client"] = {k: raw[k] for k in ("max_rss_kb", "cpu_s", "comments", "other_frames", "resets", "lost")}
        result["analysis"] = analyse(raw, likes, held, final_total)
        return result

    # -- checks ---------------------------------------------------------------------------------

    def stored(self) -> dict[str, Any]:
        """Like rows and like_count per video, read from the database itself."""
        query_rows = "SELECT video_id, COUNT(*) FROM likes_like GROUP BY video_id"
        query_counts = "SELECT id, like_count FROM likes_livevideo"
        if self.args.db == "sqlite":
            with contextlib.closing(sqlite3.connect(self.tmp / "db.sqlite3", timeout=30)) as db:
                rows, counts = dict(db.execute(query_rows).fetchall()), dict(db.execute(query_counts).fetchall())
        else:
            import psycopg

            with psycopg.connect(f"{self.args.pg}/{self.pg_db}", connect_timeout=10) as db:
                rows, counts = dict(db.execute(query_rows).fetchall()), dict(db.execute(query_counts).fetchall())
        return {"rows": rows, "like_count": counts}

    async def api_counts(self) -> dict[int, int]:
        connection = self.connection(self.workers[0].port, self.staff["token"])
        result = {}
        try:
            for video in self.accepted:
                status, body = await connection.request("GET", f"/api/videos/{video}", timeout=self.remaining(10))
                result[video] = body["like_count"] if status == 200 else -status
        finally:
            connection.close()
        return result

    async def verify(self) -> dict[str, Any]:
        stored = await asyncio.to_thread(self.stored)
        api = await self.api_counts()
        per_video = {
            video: {
                "accepted": accepted,
                "rows": stored["rows"].get(video, 0),
                "like_count": stored["like_count"].get(video),
                "api_like_count": api.get(video),
            }
            for video, accepted in sorted(self.accepted.items())
        }
        ok = all(len({v["accepted"], v["rows"], v["like_count"], v["api_like_count"]}) == 1 for v in per_video.values())
        return {"ok": ok, "per_video": per_video, "total_rows": sum(stored["rows"].values())}

    # -- the whole run --------------------------------------------------------------------------

    async def main(self) -> dict[str, Any]:
        args = self.args
        report = self.report
        report["stamp"] = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        report["date"] = subprocess.run(["date"], capture_output=True, text=True, check=False).stdout.strip()
        report["machine"] = procs.machine_info()
        report["config"] = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        report["loadavg_start"] = os.getloadavg()
        await self.start_servers()
        await self.warm_up()
        await asyncio.sleep(args.settle)
        self.check_alive()
        if args.phase in ("both", "throughput"):
            print(
                f"throughput: {args.concurrency} connections, up to {args.likes} likes or {args.seconds:g} s ...",
                file=sys.stderr,
            )
            report["throughput"] = await self.throughput()
            self.check_alive()
            await asyncio.sleep(args.settle)
        if args.phase in ("both", "e2e"):
            report["e2e"] = await self.end_to_end()
            self.check_alive()
        # Flushes still pending write nothing, but let the last window close before reading the database.
        await asyncio.sleep(1.0)
        report["stored"] = await self.verify()
        report["loadavg_end"] = os.getloadavg()
        report["log_problems"] = {w.name: w.log_problems()[-20:] for w in self.workers if w.log_problems()}
        return report

    def cleanup(self) -> None:
        """Stop everything this run started, by PID; drop the PostgreSQL database; remove the temp dir."""
        if self.profiler is not None and self.profiler.poll() is None:
            self.profiler.kill()
            self.profiler.wait(timeout=10)
        if self.viewers is not None:
            self.viewers.stop()
        for managed in [*self.workers, *([self.redis] if self.redis else [])]:
            with contextlib.suppress(Exception):
                managed.stop()
        if self.pg_db and self.pg_admin is not None:
            try:
                self.pg_admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            except Exception as exc:  # say so, and go on cleaning up
                print(f"could not drop database {self.pg_db}: {exc}", file=sys.stderr)
        if self.pg_admin is not None:
            self.pg_admin.close()
        if self.args.keep_tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def analyse(raw: dict[str, Any], likes: dict[str, Any], held: int, final_total: int) -> dict[str, Any]:
    """Per like and per event latencies, events per viewer and the per-viewer checks (see the module doc)."""
    events = []
    for (event_id, _type, data), times in zip(raw["watched_events"], raw["watched_times"], strict=True):
        frame = json.loads(data)
        events.append(
            {
                "id": event_id,
                "count": frame["data"]["count"],
                "covered": frame["data"]["covered"],
                "published_at": frame["published_at"],
                "times": array("d", times),
            }
        )
    by_count = sorted(range(len(events)), key=lambda index: events[index]["count"])
    # Likes by their answered total: the event announcing total n is the one with count - covered < n <= count.
    sent_by_total = {total: sent for total, sent in zip(likes["totals"], likes["sent_at"], strict=True) if total}
    like_latency = array("d")
    delivery = array("d")
    completion = []
    window = []
    announced = 0
    for index in by_count:
        event = events[index]
        covered_sent = [
            sent_by_total.get(n, 0.0) for n in range(event["count"] - event["covered"] + 1, event["count"] + 1)
        ]
        covered_sent = [sent for sent in covered_sent if sent]
        announced += len(covered_sent)
        for received in event["times"]:
            delivery.append(received - event["published_at"])
            for sent in covered_sent:
                like_latency.append(received - sent)
        if covered_sent and event["times"]:
            completion.append(max(event["times"]) - min(covered_sent))
            window.append(event["published_at"] - min(covered_sent))
    per_viewer = raw["watched_per_stream"]
    counts_per_viewer = [len(sequence) for sequence in per_viewer]
    last_ok = covered_ok = rising_ok = 0
    duplicates = 0
    for sequence in per_viewer:
        counts = [events[index]["count"] for index in sequence]
        duplicates += len(sequence) - len(set(sequence))
        last_ok += bool(counts) and counts[-1] == final_total
        covered_ok += sum(events[index]["covered"] for index in set(sequence)) == final_total
        rising_ok += all(a < b for a, b in itertools.pairwise(counts))
    expected = held * len(events)
    received = sum(len(event["times"]) for event in events)
    return {
        "events": len(events),
        "likes_accepted": likes["accepted"],
        "final_total": final_total,
        "covered_total": sum(event["covered"] for event in events),
        "likes_announced": announced,
        "events_per_viewer": {"min": min(counts_per_viewer, default=0), "max": max(counts_per_viewer, default=0)},
        "viewers_last_count_ok": last_ok,
        "viewers_covered_ok": covered_ok,
        "viewers_counts_rising": rising_ok,
        "deliveries_expected": expected,
        "deliveries_received": received - duplicates,
        "deliveries_lost": expected - (received - duplicates),
        "duplicates": duplicates,
        "like_to_viewer_s": procs.percentiles(like_latency, (50, 90, 99)),
        "like_to_viewer_samples": len(like_latency),
        "published_at_to_viewer_s": procs.percentiles(delivery, (50, 90, 99)),
        "first_like_to_published_at_s": procs.percentiles(window, (50, 90, 99)),
        "first_like_to_last_viewer_s": procs.percentiles(completion, (50, 90, 99)),
        "per_event": [
            {k: events[i][k] for k in ("id", "count", "covered", "published_at")}
            | {"receivers": len(events[i]["times"])}
            for i in by_count
        ],
    }


# -- output --------------------------------------------------------------------------------------


def cpu_line(cpu: dict[str, Any], cores: int) -> str:
    per = cpu["per_process"]
    wall = cpu["wall_s"]
    servers = cpu["workers_s"] + per.get("redis", 0) + (per.get("postgres") or 0)
    parts = ", ".join(f"{name} {value:.1f}" for name, value in per.items())
    return (
        f"server {servers:.1f} s (workers {cpu['workers_s']:.1f}), client {cpu['clients_s']:.1f} s over {wall:.1f} s "
        f"wall ({(servers + cpu['clients_s']) / wall / cores * 100:.0f} % of {cores} cores; other processes on the "
        f"machine {cpu['others_s']:.1f} s): {parts}"
    )


def render(report: dict[str, Any]) -> str:
    config = report["config"]
    cores = report["machine"]["nproc"]
    load = (
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_start'])} -> "
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_end'])}"
    )
    db = report["database"]["engine"]
    if db == "postgres":
        db += " (PostgreSQL CPU is the whole server's, other users' databases included)"
    lines = [f"### {config['name']} ({report['stamp']}, {db}, {config['workers']} workers)", ""]
    stored = report["stored"]
    if "throughput" in report:
        t = report["throughput"]
        per_like = t["cpu"]["workers_s"] / t["accepted"] * 1000 if t["accepted"] else None
        rate = f"{t['likes_per_s']:,.0f}" if t["likes_per_s"] else "-"
        lines += [
            "| throughput | value |",
            "| --- | --- |",
            f"| likes | {t['accepted']:,} accepted of {t['sent']:,} sent ({t['statuses']}); {config['concurrency']} "
            f"keep-alive connections, {config['members']} members, {config['videos']} videos |",
            f"| likes/s accepted | {rate} (over {t['wall_s']:.1f} s) |",
            f"| POST latency (ms) | {_p(t['latency_s'])} |",
            f"| errors | {t['errors']} |",
            f"| answered counts | 1..n once each per video: {'yes' if t['answered_counts_exact'] else 'NO'} |",
            f"| worker CPU per like | {per_like:.2f} ms |" if per_like else "| worker CPU per like | - |",
            *(
                [
                    f"| PostgreSQL sessions opened, transactions committed | {pg['sessions']:,}, "
                    f"{pg['xact_commit']:,} ({pg['sessions'] / max(1, t['sent']):.2f} sessions per like; "
                    f"PostgreSQL CPU {t['cpu']['per_process'].get('postgres', 0) / max(1, t['accepted']) * 1000:.2f}"
                    " ms per like) |"
                ]
                if (pg := t.get("pg_stats"))
                else []
            ),
            f"| CPU | {cpu_line(t['cpu'], cores)} |",
            "",
        ]
        if t.get("profile"):
            lines += ["py-spy w0: " + (t["profile"].get("error") or pyspy.render(t["profile"])), ""]
    if "e2e" in report:
        e = report["e2e"]
        a, lk, conn = e["analysis"], e["likes"], e["connect"]
        rate = f"{lk['rate_achieved']:.1f}" if lk["rate_achieved"] else "-"
        lines += [
            "| like -> viewers | value |",
            "| --- | --- |",
            f"| viewers | {conn['held']:,} of {conn['requested']:,} streams on `video.{e['video']}.likes` "
            f"(errors: {conn['errors'] or 'none'}), connected in {conn['wall_s']:.2f} s |",
            f"| likes | {lk['accepted']} of {lk['sent']} accepted ({lk['statuses']}), {rate}/s (target "
            f"{lk['rate_target']:g}); POST {_p(lk['post_latency_s'])} ms |",
            f"| `like.created` events | {a['events']} for {a['likes_accepted']} likes "
            f"({a['likes_accepted'] / max(1, a['events']):.1f} likes per event); per viewer "
            f"{a['events_per_viewer']['min']}-{a['events_per_viewer']['max']} |",
            f"| like POST sent -> receipt at a viewer (ms) | {_p(a['like_to_viewer_s'])} "
            f"({a['like_to_viewer_samples']:,} like x viewer samples) |",
            f"| first like of a window -> `published_at` (ms) | {_p(a['first_like_to_published_at_s'])} |",
            f"| event `published_at` -> receipt (ms) | {_p(a['published_at_to_viewer_s'])} |",
            f"| first like of a window -> its last viewer (ms) | {_p(a['first_like_to_last_viewer_s'])} |",
            f"| exact counts | last `count` = final total {a['final_total']} on {a['viewers_last_count_ok']:,} of "
            f"{conn['held']:,} viewers; `covered` sum = {a['final_total']} on {a['viewers_covered_ok']:,}; counts "
            f"rising on {a['viewers_counts_rising']:,}; `covered` of all events {a['covered_total']} |",
            f"| deliveries | {a['deliveries_received']:,} of {a['deliveries_expected']:,}: lost "
            f"{a['deliveries_lost']}, duplicates {a['duplicates']}, streams closed {e['client']['lost']}, "
            f"resets {e['client']['resets']} |",
            f"| CPU | {cpu_line(e['cpu'], cores)} |",
            "",
        ]
    bad = {video: row for video, row in stored["per_video"].items() if len(set(row.values())) != 1}
    lines += [
        f"Stored: {'OK' if stored['ok'] else 'MISMATCH'}: for each of {len(stored['per_video'])} videos, Like rows = "
        f"like_count (DB) = like_count (API) = likes accepted; {stored['total_rows']:,} rows in all"
        + (f"; mismatches: {bad}" if bad else "")
        + ".",
        f"Load average (1/5/15 min) start -> end: {load}.",
    ]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:3000]}"]
    return "\n".join(lines)


def _p(values: dict[str, float | None]) -> str:
    return f"p50 {ms(values['p50'])}, p90 {ms(values.get('p90'))}, p99 {ms(values['p99'])}, max {ms(values['max'])}"


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
    except (BenchError, RuntimeError, subprocess.SubprocessError, OSError, TimeoutError, ConnectionError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for managed in run.workers:
            for line in managed.log_problems()[-10:]:
                print(f"  {managed.name}: {line}", file=sys.stderr)
        return 1
    finally:
        run.cleanup()
    print(render(report))
    print(f"\nJSON: {procs.write_report(report, args.results_dir)}")
    return 0 if report["stored"]["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
