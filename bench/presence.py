"""Presence benchmark: heartbeat throughput and Redis cost with N online members over W workers, and offline lag.

    .venv/bin/python -m bench.presence --members 10000 --workers 4

Starts its own redis-server on a free port. Each simulated worker is what a Daphne worker runs for presence: its
own RedisStore (own connection) beating the members whose streams it holds, and a sweeper loop with the jitter of
presence.services.asweep_forever. They share this one process (the client's CPU is reported beside Redis's).
Phases:
1. burst: every member comes online at once (one heartbeat call per worker for all its members);
2. steady: workers beat their members back to back for --seconds (no transitions: the steady-state cost);
3. idle sweeps: every worker sweeps every SWEEP_SECS with nobody expiring, for --seconds;
4. offline lag: every member stops at once; W sweeper loops take them offline and publish each
   `presence.changed` as presence.services does (channels-redis on the same Redis, no subscribers). Lag =
   time the event was handed to the channel layer - (last heartbeat + OFFLINE_AFTER_SECS).
Prints a Markdown table and writes JSON to bench/results/presence-<timestamp>.json.
"""

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000, help="online members (default 10,000)")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers sharing them (default 4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phases (default 5)")
    parser.add_argument("--offline-after", type=float, default=1.0, help="OFFLINE_AFTER_SECS (default 1.0)")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of the whole run, seconds")
    return parser.parse_args(argv)


def client_cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def redis_counters(client: Any) -> dict[str, float]:
    stats = await client.info("commandstats")
    cpu = await client.info("cpu")
    script = stats.get("cmdstat_evalsha", {})
    return {
        "script_calls": float(script.get("calls", 0)),
        "script_usec": float(script.get("usec", 0)),
        "cpu_secs": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
    }


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in after}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    from presence import services
    from presence.store import RedisStore

    members = list(range(1, args.members + 1))
    shares = [members[index :: args.workers] for index in range(args.workers)]
    stores = [RedisStore(redis_url, key_prefix="bench") for _ in range(args.workers)]
    admin = aioredis.Redis.from_url(redis_url)
    result: dict[str, Any] = {}
    sweep_secs = args.offline_after / 10

    # 1. burst: everyone online at once.
    started = time.perf_counter()
    online = await asyncio.gather(
        *(store.abeat(share, time.time()) for store, share in zip(stores, shares, strict=True))
    )
    burst_secs = time.perf_counter() - started
    assert sum(len(rows) for rows in online) == args.members
    result["burst"] = {"members": args.members, "secs": burst_secs, "transitions_per_sec": args.members / burst_secs}

    # 2. steady heartbeats, back to back.
    async def beat_loop(store: RedisStore, share: list[int], until: float) -> int:
        beats = 0
        while time.perf_counter() < until:
            assert await store.abeat(share, time.time()) == []
            beats += len(share)
        return beats

    before, cpu_before = await redis_counters(admin), client_cpu_secs()
    started = time.perf_counter()
    until = started + args.seconds
    beats = sum(await asyncio.gather(*(beat_loop(s, share, until) for s, share in zip(stores, shares, strict=True))))
    elapsed = time.perf_counter() - started
    used = delta(await redis_counters(admin), before)
    client_cpu = client_cpu_secs() - cpu_before
    result["steady"] = {
        "heartbeats": beats,
        "secs": elapsed,
        "heartbeats_per_sec": beats / elapsed,
        "script_calls": used["script_calls"],
        "redis_script_usec_per_heartbeat": used["script_usec"] / beats,
        "redis_cpu_usec_per_heartbeat": 1e6 * used["cpu_secs"] / beats,
        "redis_cpu_share": used["cpu_secs"] / elapsed,
        "client_cpu_usec_per_heartbeat": 1e6 * client_cpu / beats,
        "client_cpu_share": client_cpu / elapsed,
    }

    # 3. idle sweeps: the standing cost of W sweepers with nobody expiring.
    async def idle_sweeps(store: RedisStore, until: float) -> int:
        sweeps = 0
        while time.perf_counter() < until:
            await asyncio.sleep(sweep_secs * random.uniform(0.75, 1.25))
            await store.asweep(time.time(), 3600.0)
            sweeps += 1
        return sweeps

    before = await redis_counters(admin)
    until = time.perf_counter() + args.seconds
    sweeps = sum(await asyncio.gather(*(idle_sweeps(store, until) for store in stores)))
    used = delta(await redis_counters(admin), before)
    result["idle_sweeps"] = {
        "sweeps": sweeps,
        "sweep_secs": sweep_secs,
        "redis_script_usec_per_sweep": used["script_usec"] / max(1, used["script_calls"]),
        "redis_cpu_share": used["cpu_secs"] / args.seconds,
    }

    # 4. offline lag: one last heartbeat for everyone, then silence.
    last_beat = time.time()
    await asyncio.gather(*(store.abeat(share, last_beat) for store, share in zip(stores, shares, strict=True)))
    lags: list[float] = []
    taken_by: list[int] = [0] * args.workers
    done = asyncio.Event()
    real_apublish = services.apublish

    async def timed_apublish(topic: str, event_type: str, data: dict[str, Any]) -> None:
        await real_apublish(topic, event_type, data)
        lags.append(time.time() - (data["last_seen"] + args.offline_after))

    # The services' own publishing (bounded concurrency, through realtime.apublish), timed per event.
    services.apublish = timed_apublish

    async def sweeper(index: int, store: RedisStore) -> None:
        while not done.is_set():
            await asyncio.sleep(sweep_secs * random.uniform(0.75, 1.25))
            rows = await store.asweep(time.time(), args.offline_after)
            await services._apublish_all(rows)
            taken_by[index] += len(rows)
            if len(lags) >= args.members:
                done.set()

    await asyncio.wait_for(asyncio.gather(*(sweeper(i, s) for i, s in enumerate(stores))), args.timeout)
    assert len(lags) == args.members, "each member offline exactly once"
    result["offline_lag"] = {
        "members": args.members,
        "offline_after_secs": args.offline_after,
        "sweep_secs": sweep_secs,
        "lag_p50_secs": statistics.median(lags),
        "lag_p99_secs": percentile(lags, 0.99),
        "lag_max_secs": max(lags),
        "lag_min_secs": min(lags),
        "all_offline_after_last_beat_secs": max(lags) + args.offline_after,
        "taken_by_worker": taken_by,
    }
    for store in stores:
        await store.aclose()
    await admin.aclose()
    return result


def table(result: dict[str, Any]) -> str:
    steady, idle, lag, burst = result["steady"], result["idle_sweeps"], result["offline_lag"], result["burst"]
    rows = [
        ("members online / workers", f"{result['members']:,} / {result['workers']}"),
        ("burst: all online at once", f"{burst['secs'] * 1000:.0f} ms ({burst['transitions_per_sec']:,.0f} /s)"),
        ("steady heartbeats processed", f"{steady['heartbeats_per_sec']:,.0f} /s"),
        ("Redis script time per heartbeat", f"{steady['redis_script_usec_per_heartbeat']:.2f} us"),
        ("Redis CPU per heartbeat", f"{steady['redis_cpu_usec_per_heartbeat']:.2f} us"),
        ("client CPU per heartbeat", f"{steady['client_cpu_usec_per_heartbeat']:.2f} us"),
        ("Redis / client CPU while beating", f"{steady['redis_cpu_share']:.0%} / {steady['client_cpu_share']:.0%}"),
        ("idle sweep (nobody expiring)", f"{idle['redis_script_usec_per_sweep']:.1f} us of Redis per sweep"),
        (
            "offline lag past the threshold",
            f"p50 {lag['lag_p50_secs'] * 1000:.0f} ms, p99 {lag['lag_p99_secs'] * 1000:.0f} ms, "
            f"max {lag['lag_max_secs'] * 1000:.0f} ms",
        ),
        ("taken offline per worker", ", ".join(f"{n:,}" for n in lag["taken_by_worker"])),
    ]
    lines = ["| measure | value |", "| --- | --- |"] + [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.timeout
    with tempfile.TemporaryDirectory(prefix="bench-presence-") as tmp:
        redis = procs.start_redis(Path(tmp), deadline)
        try:
            os.environ.update(
                DJANGO_SETTINGS_MODULE="livesite.settings",
                REDIS_URL=redis.url.replace("http://", "redis://") + "/0",
                DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
                PRESENCE_OFFLINE_AFTER_SECS=str(args.offline_after),
                PRESENCE_HEARTBEAT_SECS=str(args.offline_after / 3),
                LOG_LEVEL="WARNING",
            )
            import django

            django.setup()
            result = asyncio.run(run(args, os.environ["REDIS_URL"]))
        finally:
            redis.stop()
    result.update(
        members=args.members,
        workers=args.workers,
        machine={"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        command="python -m bench.presence " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"presence-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2))
    print(table(result))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
