"""Likes path: likes accepted per second through the API, and like-to-viewer latency with 1,000 viewers.

    .venv/bin/python -m bench.likes_api --db sqlite --workers 2
    .venv/bin/python -m bench.likes_api --db postgres --workers 2 [--server uvicorn | --access-log off]
    .venv/bin/python -m bench.likes_api --db postgres --phase e2e --videos 100 --hot-share 0.5 --viewers 10000 \
        --e2e-rate 2000 --e2e-likes 30000 --e2e-connections 64 [--site-diff /path/to/routing.diff]

Its own redis-server and W workers on a temp SQLite file (`--db sqlite`) or a fresh, uniquely named PostgreSQL
database on 127.0.0.1:5432 (`--db postgres`; dropped at the end), with --members members (DRF tokens) and videos.
Phase 1, throughput: C keep-alive connections (members' tokens, round-robin over the workers) POST
`/api/videos/{id}/likes` back to back over --videos videos until --likes or --seconds; likes/s accepted (201),
latency, errors; the API must answer each video's totals 1..n once each. Phase 2, end to end: --viewers streams
on `video.{id}.likes` of a fresh video; --e2e-likes likes at --e2e-rate per second. Likes are coalesced
(LIKES_COALESCE_MS, 250 ms), so viewers get far fewer `like.created` events than likes: a like answered with
total n is announced by the event whose (count - covered, count] holds n. Reported: like POST sent -> receipt at
each viewer, `published_at` -> receipt, events per viewer, and per viewer that the last `count` is the final
total, that the `covered` add up to it, that counts only rise, nothing lost or duplicated. At the end, the
database must hold as many Like rows as were accepted per video, and like_count (DB and API) must equal them.
CPU of every process, PostgreSQL's as a whole (other users' databases included), per phase.

Live-video shape (`--hot-share F`): in phase 2 a share F of the likes goes to the watched (hot) video and the rest
round-robin over the --videos videos of phase 1, all at --e2e-rate; the viewers' checks concern the hot video, the
stored-rows check every video. `--site-diff FILE` runs the site (the working tree, or --rev) with a unified diff
applied to a copy of it: how a change proposed for files another engineer owns is measured before it lands.

Servers: Daphne as every benchmark starts it (`python -m livesite.serve`, its access log on: a line per like to
the worker's stdout), `--access-log off` the same with `-v 0`, or `--server uvicorn` (uvloop, httptools, no
access log) on the same app and environment.
"""

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import math
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
from array import array
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness as h

SEED_SCRIPT = """
import json, sys, django
django.setup()
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from likes.models import LiveVideo
members, videos = int(sys.argv[1]), int(sys.argv[2])
found = []
for index in range(members):
    user, _ = User.objects.get_or_create(username=f"member{index}", defaults={"first_name": f"Member {index}"})
    found.append({"id": user.pk, "token": Token.objects.get_or_create(user=user)[0].key})
owner = User.objects.get(username="bench")
ids = [
    LiveVideo.objects.get_or_create(slug=f"bench-{index}", defaults={"title": f"Bench {index}", "owner": owner})[0].pk
    for index in range(videos)
]
print(json.dumps({"members": found, "videos": ids}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432", help="PostgreSQL server (no db name)")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument(
        "--server",
        choices=h.SERVERS,
        default="daphne",
        help="the workers' ASGI server: daphne (`python -m livesite.serve`, uvloop) or uvicorn (uvloop, httptools, "
        "no access log); default daphne",
    )
    parser.add_argument(
        "--access-log",
        choices=("on", "off"),
        default="on",
        help="Daphne's access log, a line per request to the worker's stdout (its default, -v 1); off: -v 0",
    )
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
    group.add_argument("--hot-share", type=float, default=1.0, help="share of phase 2's likes on the hot video")
    parser.add_argument("--site-diff", type=Path, default=None, help="apply this unified diff to a copy of the site")
    parser.add_argument("--profile", type=int, default=0, help="py-spy w0 for this many seconds of phase 1")
    parser.add_argument("--coalesce-ms", type=int, default=0, help="LIKES_COALESCE_MS (default: the site's, 250)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for the last events")
    h.add_common_options(parser, "likes-<db>-w<W>", 300.0)
    args = parser.parse_args(argv)
    positive = (args.workers, args.members, args.videos, args.concurrency, args.likes, args.seconds)
    if min(positive) <= 0 or min(args.viewers, args.e2e_likes, args.e2e_connections) <= 0 or args.e2e_rate <= 0:
        parser.error("counts, rates and durations must be positive")
    if not 0 < args.hot_share <= 1:
        parser.error("--hot-share is a share of the likes: within (0, 1]")
    if args.server == "uvicorn" and args.access_log == "on":
        args.access_log = "off"  # uvicorn runs with --no-access-log: say so in the report
    args.name = args.name or f"likes-{args.db}-w{args.workers}"
    return args


def postgres_cpu_seconds(postmaster: int) -> float | None:
    """CPU of the whole PostgreSQL server: the postmaster, its reaped children (cutime, cstime) and live ones."""

    def fields(pid: int | str) -> list[bytes]:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rpartition(b")")[2].split()

    try:
        total = sum(int(value) for value in fields(postmaster)[11:15])
    except OSError:
        return None
    for entry in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError, ValueError):
            child = fields(entry)
            total += int(child[11]) + int(child[12]) if int(child[1]) == postmaster else 0
    return total / h.CLK_TCK


class Likes(h.Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefix="bench-likes-")
        self.pg_db, self.pg_admin, self.postmaster = "", None, 0  # pg_admin: psycopg, `postgres` db, autocommit
        self.accepted: Counter[int] = Counter()  # video id -> likes accepted (201), for the final check
        self.patched: Path | None = None

    def site_root(self) -> Path:
        """The site as the harness gives it, or with --site-diff a copy of it with the diff applied."""
        root = super().site_root()
        if self.args.site_diff is None:
            return root
        if self.patched is None:
            self.patched = self.tmp / "patched"
            listed = subprocess.run(
                ["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "-z"],
                capture_output=True,
                check=False,
            )
            names = [n for n in listed.stdout.decode().split("\0") if n] if listed.returncode == 0 else None
            if names is None:  # an exported --rev: no repository, copy it whole
                shutil.copytree(root, self.patched)
            for name in names or []:
                if (source := root / name).is_file():
                    (self.patched / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, self.patched / name)
            diff = self.args.site_diff.read_bytes()
            subprocess.run(["git", "apply", "-p1", "-"], cwd=self.patched, input=diff, check=True)
            self.code = {**self.code, "site_diff": str(self.args.site_diff)}
            self.code["site_diff_sha256"] = hashlib.sha256(diff).hexdigest()[:12]
            self.report["code"] = self.code
        return self.patched

    def snapshot(self) -> dict[str, dict[str, Any]]:
        readings = super().snapshot()
        if self.postmaster:
            readings["postgres"] = {"cpu_s": postgres_cpu_seconds(self.postmaster)}
        return readings

    def connections(self, count: int) -> list[h.HttpConnection]:
        """Keep-alive connections round-robin over the workers, each with a member's token."""
        workers, members = self.workers, self.members
        return [self.http(workers[i % len(workers)], members[i % len(members)]["token"]) for i in range(count)]

    async def like(self, connection: h.HttpConnection, video: int) -> tuple[int, Any]:
        return await connection.request("POST", f"/api/videos/{video}/likes", timeout=30)

    async def start(self) -> None:
        args, overrides = self.args, {}
        redis = self.start_redis()
        if args.db == "postgres":
            import psycopg  # Imported here: only with --db postgres.

            self.pg_admin = psycopg.connect(f"{args.pg}/postgres", autocommit=True, connect_timeout=10)
            self.pg_db = f"livesite_bench_{os.getpid()}_{secrets.token_hex(4)}"
            self.pg_admin.execute(f'CREATE DATABASE "{self.pg_db}"')
            with contextlib.suppress(Exception):
                data_dir = self.pg_admin.execute("SHOW data_directory").fetchone()[0]
                self.postmaster = int(Path(data_dir, "postmaster.pid").read_text().split()[0])
            overrides["DATABASE_URL"] = f"{args.pg}/{self.pg_db}"
            self.report["database"] = {"engine": "postgres", "name": self.pg_db, "postmaster": self.postmaster}
        else:
            self.report["database"] = {"engine": "sqlite", "path": str(self.tmp / "db.sqlite3")}
        if args.coalesce_ms:
            overrides["LIKES_COALESCE_MS"] = str(args.coalesce_ms)
        env = self.site_env(redis, **overrides)
        await self.prepare_site(env)
        # Videos: phase 1's (phase 2's spread too), then phase 2's own (hot), then one for warming up.
        seeded = await self.django(env, SEED_SCRIPT, str(args.members), str(args.videos + 2))
        self.members, self.videos = seeded["members"], seeded["videos"]
        self.start_workers(args.workers, env)
        for connection in self.connections(len(self.workers)):  # warm up: two likes per worker
            for _ in range(2):
                status, body = await self.like(connection, self.videos[-1])
                if status != 201:
                    raise h.BenchError(f"warm-up like on port {connection.port}: {status} {body!r}")
                self.accepted[self.videos[-1]] += 1
            connection.close()
        await self.stats()

    def pg_stats(self) -> dict[str, int] | None:
        """This database's sessions opened and transactions so far (pg_stat_database), with --db postgres."""
        if not self.pg_db:
            return None
        self.pg_admin.execute("SELECT pg_stat_clear_snapshot()")
        query = "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s"
        sessions, commits, rollbacks = self.pg_admin.execute(query, (self.pg_db,)).fetchone()
        return {"sessions": sessions, "xact_commit": commits, "xact_rollback": rollbacks}

    async def throughput(self) -> dict[str, Any]:
        args = self.args
        videos = self.videos[: args.videos]
        counts: dict[int, list[int]] = {video: [] for video in videos}

        async def send(item: int, connection: h.HttpConnection) -> int:
            status, body = await self.like(connection, videos[item % len(videos)])
            if status == 201:
                counts[videos[item % len(videos)]].append(body["count"])
            return status

        pg_before = await asyncio.to_thread(self.pg_stats)
        profiles = self.start_profiles(self.workers[:1], args.profile) if args.profile else []
        before = self.snapshot()
        connections = self.connections(args.concurrency)
        result = await self.send_paced(args.likes, math.inf, connections, send, accept=201, give_up=args.seconds)
        del result["sent_at"]
        after = self.snapshot()
        await asyncio.sleep(1.0)  # PostgreSQL 15 flushes its statistics at most once a second
        pg_after = await asyncio.to_thread(self.pg_stats)
        if profiles:
            summarise = lambda path: h.summarise_profile(path, 25, main_thread_only=False)  # noqa: E731
            result["profile"] = (await self.finish_profiles(profiles, summarise))[0]
        for video, answered in counts.items():
            self.accepted[video] += len(answered)
        return result | {
            "errors": result["sent"] - result["accepted"],
            # The API answers each like with its video's total: exactly 1..n per fresh video, each once.
            "answered_counts_exact": all(sorted(c) == list(range(1, len(c) + 1)) for c in counts.values()),
            "per_video": {video: len(answered) for video, answered in counts.items()},
            "cpu": h.cpu_deltas(before, after),
            "pg_stats": {key: pg_after[key] - pg_before[key] for key in pg_after} if pg_after else None,
        }

    async def end_to_end(self) -> dict[str, Any]:
        args = self.args
        video = self.videos[args.videos]
        request = self.stream_request([f"video.{video}.likes"])
        share = self.spread(self.workers, args.viewers, 1, 1)
        result: dict[str, Any] = {"video": video}
        config = {"names": ["client-viewers"], "watch_types": ["like.created"]}
        result["connect"], _samples = await self.open_streams(share, request, **config)
        held = result["connect"]["held"]
        print(f"liking video {video} {args.e2e_likes} times at {args.e2e_rate}/s, {held} viewers ...", file=sys.stderr)
        totals = [0] * args.e2e_likes
        spread = self.videos[: args.videos] if args.hot_share < 1 else []
        result["spread_videos"] = len(spread)
        per_video: Counter[int] = Counter()

        def target(seq: int) -> int:
            # Deterministic and evenly mixed: like `seq` is the hot video's when floor(seq x share) steps up, so
            # any run of likes holds the hot share (blocks of the first share x 1,000 of every 1,000 made bursts
            # of 250 ms on, 250 ms off at 2,000/s: half as many windows as an even mix).
            hot_so_far = math.floor((seq + 1) * args.hot_share)
            if not spread or hot_so_far > math.floor(seq * args.hot_share):
                return video
            return spread[(seq - hot_so_far) % len(spread)]  # the others round-robin over every spread video

        async def send(seq: int, connection: h.HttpConnection) -> int:
            liked = target(seq)
            status, body = await self.like(connection, liked)
            if status == 201:
                per_video[liked] += 1
            # Only the hot video's totals are matched with the viewers' events.
            totals[seq] = body["count"] if status == 201 and liked == video else 0
            return status

        before = self.snapshot()
        connections = self.connections(args.e2e_connections)
        likes = await self.send_paced(args.e2e_likes, args.e2e_rate, connections, send, accept=201)
        result["likes"] = likes = likes | {"totals": totals, "errors": args.e2e_likes - likes["accepted"]}
        likes["hot_accepted"] = per_video[video]
        self.accepted.update(per_video)
        final_total = max(totals)

        def done(statuses: list[dict[str, Any]]) -> bool:
            """Every viewer has the event carrying the final total, and every event."""
            events = statuses[0].get("watched_events", [])
            final = [n for *_, data, n in events if json.loads(data)["data"]["count"] == final_total]
            return bool(final) and final[0] >= held and all(n >= held for *_, n in events)

        result["drain"] = await self.drain(done, args.drain)
        after = self.snapshot()
        result["cpu"] = h.cpu_deltas(before, after)
        result["worker_stats"] = await self.stats()
        raw = (await self.ask_all(("stop",), 60))[0]
        result["client"] = {k: raw[k] for k in ("max_rss_kb", "cpu_s", "comments", "other_frames", "resets", "lost")}
        result["analysis"] = analyse(raw, likes | {"accepted": per_video[video]}, held, final_total)
        return result

    async def verify(self) -> dict[str, Any]:
        """Like rows and like_count per video in the database itself, and like_count from the API."""
        queries = (
            "SELECT video_id, COUNT(*) FROM likes_like GROUP BY video_id",
            "SELECT id, like_count FROM likes_livevideo",
        )

        def stored() -> list[dict[int, int]]:
            if self.args.db == "sqlite":
                with contextlib.closing(sqlite3.connect(self.tmp / "db.sqlite3", timeout=30)) as db:
                    return [dict(db.execute(query).fetchall()) for query in queries]
            import psycopg

            with psycopg.connect(f"{self.args.pg}/{self.pg_db}", connect_timeout=10) as db:
                return [dict(db.execute(query).fetchall()) for query in queries]

        rows, like_counts = await asyncio.to_thread(stored)
        per_video = {}
        for video, accepted in sorted(self.accepted.items()):
            api = await self.call(self.workers[0], "GET", f"/api/videos/{video}")
            per_video[video] = {"accepted": accepted, "rows": rows.get(video, 0), "like_count": like_counts.get(video)}
            per_video[video]["api_like_count"] = api["like_count"]
        ok = all(len(set(v.values())) == 1 for v in per_video.values())
        return {"ok": ok, "per_video": per_video, "total_rows": sum(rows.values())}

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        await self.start()
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
        await asyncio.sleep(1.0)  # pending flushes write nothing, but let the last window close first
        report["stored"] = await self.verify()
        report["exit_status"] = 0 if report["stored"]["ok"] else 2
        self.finish()
        return report

    def cleanup(self) -> None:
        super().cleanup()
        if self.pg_db and self.pg_admin is not None:
            try:
                self.pg_admin.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
            except Exception as exc:  # say so, and go on cleaning up
                print(f"could not drop database {self.pg_db}: {exc}", file=sys.stderr)
        if self.pg_admin is not None:
            self.pg_admin.close()


def analyse(raw: dict[str, Any], likes: dict[str, Any], held: int, final_total: int) -> dict[str, Any]:
    """Per like and per event latencies, events per viewer and the per-viewer checks (see the module doc)."""
    events = []
    for (event_id, _type, data), times in zip(raw["watched_events"], raw["watched_times"], strict=True):
        frame = json.loads(data)
        events.append({"id": event_id, **{k: frame["data"][k] for k in ("count", "covered")}})
        events[-1] |= {"published_at": frame["published_at"], "times": array("d", times)}
    by_count = sorted(range(len(events)), key=lambda index: events[index]["count"])
    # Likes by their answered total: the event announcing total n is the one with count - covered < n <= count.
    sent_by_total = {total: sent for total, sent in zip(likes["totals"], likes["sent_at"], strict=True) if total}
    like_latency, delivery, completion, window, announced = array("d"), array("d"), [], [], 0
    for event in (events[index] for index in by_count):
        covered = range(event["count"] - event["covered"] + 1, event["count"] + 1)
        sent = [sent_by_total[n] for n in covered if sent_by_total.get(n)]
        announced += len(sent)
        for received in event["times"]:
            delivery.append(received - event["published_at"])
            like_latency.extend(received - at for at in sent)
        if sent and event["times"]:
            completion.append(max(event["times"]) - min(sent))
            window.append(event["published_at"] - min(sent))
    per_viewer = raw["watched_per_stream"]
    last_ok = covered_ok = rising_ok = duplicates = 0
    for sequence in per_viewer:
        counts = [events[index]["count"] for index in sequence]
        duplicates += len(sequence) - len(set(sequence))
        last_ok += bool(counts) and counts[-1] == final_total
        covered_ok += sum(events[index]["covered"] for index in set(sequence)) == final_total
        rising_ok += all(a < b for a, b in itertools.pairwise(counts))
    received = sum(len(event["times"]) for event in events) - duplicates
    result = {"events": len(events), "likes_accepted": likes["accepted"], "final_total": final_total}
    result |= {"covered_total": sum(event["covered"] for event in events), "likes_announced": announced}
    result["events_per_viewer"] = {
        "min": min(map(len, per_viewer), default=0),
        "max": max(map(len, per_viewer), default=0),
    }
    result |= {"viewers_last_count_ok": last_ok, "viewers_covered_ok": covered_ok, "viewers_counts_rising": rising_ok}
    result |= {"deliveries_expected": held * len(events), "deliveries_received": received, "duplicates": duplicates}
    result["deliveries_lost"] = held * len(events) - received
    result |= {"like_to_viewer_s": h.percentiles(like_latency), "like_to_viewer_samples": len(like_latency)}
    result["published_at_to_viewer_s"] = h.percentiles(delivery)
    result["first_like_to_published_at_s"] = h.percentiles(window)
    result["first_like_to_last_viewer_s"] = h.percentiles(completion)
    result["per_event"] = [
        {k: v for k, v in events[i].items() if k != "times"} | {"receivers": len(events[i]["times"])} for i in by_count
    ]
    return result


def render(report: dict[str, Any]) -> str:
    config, cores, stored = report["config"], report["machine"]["nproc"], report["stored"]
    db = report["database"]["engine"]
    db += " (PostgreSQL CPU is the whole server's, other users' databases included)" if db == "postgres" else ""
    server = f"{config.get('server', 'daphne')}, access log {config.get('access_log', 'on')}"
    lines = [f"### {config['name']} ({report['stamp']}, {db}, {config['workers']} workers: {server})", ""]
    if t := report.get("throughput"):
        workers_cpu = h.worker_cpu(t["cpu"])
        lines += [
            "| throughput | value |",
            "| --- | --- |",
            f"| likes | {t['accepted']:,} accepted of {t['sent']:,} sent ({t['statuses']}); {config['concurrency']} "
            f"keep-alive connections, {config['members']} members, {config['videos']} videos |",
            f"| likes/s accepted | {h.num(t['per_s'])} (over {t['wall_s']:.1f} s) |",
            f"| POST latency (ms) | {h.pct(t['post_latency_s'])} |",
            f"| errors | {t['errors']} |",
            f"| answered counts | 1..n once each per video: {'yes' if t['answered_counts_exact'] else 'NO'} |",
            f"| worker CPU per like | {h.num(workers_cpu / t['accepted'] * 1000 if t['accepted'] else None, 2)} ms |",
        ]
        if pg := t.get("pg_stats"):
            pg_cpu = t["cpu"].get("postgres", 0) / max(1, t["accepted"]) * 1000
            lines.append(
                f"| PostgreSQL sessions opened, transactions committed | {pg['sessions']:,}, {pg['xact_commit']:,} "
                f"({pg['sessions'] / max(1, t['sent']):.2f} sessions per like; PostgreSQL CPU {pg_cpu:.2f} ms "
                "per like) |"
            )
        lines += [f"| CPU | {h.cpu_line(t['cpu'], cores)} |", ""]
        if profile := t.get("profile"):
            lines += ["py-spy w0: " + (profile.get("error") or h.render_profile(profile)), ""]
    if e := report.get("e2e"):
        a, lk, conn = e["analysis"], e["likes"], e["connect"]
        lines += [
            "| like -> viewers | value |",
            "| --- | --- |",
            f"| viewers | {conn['held']:,} of {conn['requested']:,} streams on `video.{e['video']}.likes` "
            f"(errors: {conn['errors'] or 'none'}), connected in {conn['wall_s']:.2f} s |",
            f"| likes | {lk['accepted']} of {lk['sent']} accepted ({lk['statuses']}), {lk['rate_achieved'] or 0:.1f}/s "
            f"sent (target {lk['rate_target']:g}), {h.num(lk['per_s'])}/s accepted over {lk['wall_s']:.1f} s; "
            f"{lk.get('hot_accepted', lk['accepted'])} on the hot video, the rest over {e.get('spread_videos', 0)} "
            f"videos; POST {h.pct(lk['post_latency_s'])} ms |",
            f"| `like.created` events | {a['events']} for {a['likes_accepted']} likes "
            f"({a['likes_accepted'] / max(1, a['events']):.1f} likes per event); per viewer "
            f"{a['events_per_viewer']['min']}-{a['events_per_viewer']['max']} |",
            f"| like POST sent -> receipt at a viewer (ms) | {h.pct(a['like_to_viewer_s'])} "
            f"({a['like_to_viewer_samples']:,} like x viewer samples) |",
            f"| first like of a window -> `published_at` (ms) | {h.pct(a['first_like_to_published_at_s'])} |",
            f"| event `published_at` -> receipt (ms) | {h.pct(a['published_at_to_viewer_s'])} |",
            f"| first like of a window -> its last viewer (ms) | {h.pct(a['first_like_to_last_viewer_s'])} |",
            f"| exact counts | last `count` = final total {a['final_total']} on {a['viewers_last_count_ok']:,} of "
            f"{conn['held']:,} viewers; `covered` sum = {a['final_total']} on {a['viewers_covered_ok']:,}; counts "
            f"rising on {a['viewers_counts_rising']:,}; `covered` of all events {a['covered_total']} |",
            f"| deliveries | {a['deliveries_received']:,} of {a['deliveries_expected']:,}: lost "
            f"{a['deliveries_lost']}, duplicates {a['duplicates']}, streams closed {e['client']['lost']}, "
            f"resets {e['client']['resets']} |",
            f"| CPU | {h.cpu_line(e['cpu'], cores)} |",
            "",
        ]
    bad = {video: row for video, row in stored["per_video"].items() if len(set(row.values())) != 1}
    lines += [
        f"Stored: {'OK' if stored['ok'] else 'MISMATCH'}: for each of {len(stored['per_video'])} videos, Like rows = "
        f"like_count (DB) = like_count (API) = likes accepted; {stored['total_rows']:,} rows in all"
        + (f"; mismatches: {bad}" if bad else "")
        + ".",
        f"Load average (1/5/15 min) start -> end: {h.load_line(report)}.",
    ]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:3000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Likes, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
