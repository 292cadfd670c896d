"""Presence: heartbeat throughput and Redis cost with N online members over W workers, and the offline lag.

    .venv/bin/python -m bench.presence --members 10000 --workers 4

Its own redis-server. Each simulated worker is what a Daphne worker runs for presence: its own RedisStore (own
connection) beating the members whose streams it holds, and a sweeper loop with the jitter of
presence.services.asweep_forever; they share this one process (its CPU is reported beside Redis's). Phases:
1. burst: every member comes online at once (one heartbeat call per worker for all its members);
2. steady: workers beat their members back to back for --seconds (no transitions: the steady-state cost);
3. idle sweeps: every worker sweeps every SWEEP_SECS with nobody expiring, for --seconds;
4. offline lag: every member stops at once; W sweeper loops take them offline and publish each `presence.changed`
   as presence.services does (channels-redis on the same Redis, no subscribers). Lag = time the event was handed
   to the channel layer - (last heartbeat + OFFLINE_AFTER_SECS).
"""

import argparse
import asyncio
import os
import random
import resource
import sys
import time
from typing import Any

from bench import harness as h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=10_000, help="online members (default 10,000)")
    parser.add_argument("--workers", type=int, default=4, help="simulated workers sharing them (default 4)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the steady phases (default 5)")
    parser.add_argument("--offline-after", type=float, default=1.0, help="OFFLINE_AFTER_SECS (default 1.0)")
    h.add_common_options(parser, "presence", 120.0, rev=False)
    args = parser.parse_args(argv)
    if min(args.members, args.workers) < 1 or args.seconds <= 0 or args.offline_after <= 0:
        parser.error("--members, --workers, --seconds and --offline-after must be positive")
    args.name = args.name or "presence"
    args.command = "python -m bench.presence " + " ".join(argv if argv is not None else sys.argv[1:])
    return args


def client_cpu_secs() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Presence(h.Harness):
    async def redis_used(self, before: dict[str, float] | None = None) -> dict[str, float]:
        """Redis's script calls, script time and CPU so far (or since `before`)."""
        stats, cpu = await self.admin.info("commandstats"), await self.admin.info("cpu")
        script = stats.get("cmdstat_evalsha", {})
        now = {"script_calls": float(script.get("calls", 0)), "script_usec": float(script.get("usec", 0))}
        now["cpu_secs"] = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        return {key: value - (before or {}).get(key, 0.0) for key, value in now.items()}

    async def main(self) -> dict[str, Any]:
        args, result = self.args, self.report
        url = f"redis://127.0.0.1:{self.start_redis().port}/0"
        os.environ |= {"DJANGO_SETTINGS_MODULE": "livesite.settings", "REDIS_URL": url, "LOG_LEVEL": "WARNING"}
        os.environ |= {"DATABASE_URL": f"sqlite:///{self.tmp}/db.sqlite3"}
        os.environ |= {"PRESENCE_OFFLINE_AFTER_SECS": str(args.offline_after)}
        os.environ |= {"PRESENCE_HEARTBEAT_SECS": str(args.offline_after / 3)}
        import django

        django.setup()
        import redis.asyncio as aioredis

        from presence import services
        from presence.store import RedisStore

        members = list(range(1, args.members + 1))
        stores = [RedisStore(url, key_prefix="bench") for _ in range(args.workers)]
        workers = [(store, members[index :: args.workers]) for index, store in enumerate(stores)]
        self.admin, sweep_secs = aioredis.Redis.from_url(url), args.offline_after / 10

        # 1. burst: everyone online at once.
        started = time.perf_counter()
        online = await asyncio.gather(*(store.abeat(share, time.time()) for store, share in workers))
        secs = time.perf_counter() - started
        assert sum(len(rows) for rows in online) == args.members
        result["burst"] = {"members": args.members, "secs": secs, "transitions_per_sec": args.members / secs}

        # 2. steady heartbeats, back to back.
        async def beat_loop(store: RedisStore, share: list[int], until: float) -> int:
            beats = 0
            while time.perf_counter() < until:
                assert await store.abeat(share, time.time()) == []
                beats += len(share)
            return beats

        before, cpu_before, started = await self.redis_used(), client_cpu_secs(), time.perf_counter()
        beats = sum(await asyncio.gather(*(beat_loop(*worker, started + args.seconds) for worker in workers)))
        elapsed, client_cpu = time.perf_counter() - started, client_cpu_secs() - cpu_before
        used = await self.redis_used(before)
        result["steady"] = {"heartbeats": beats, "secs": elapsed, "heartbeats_per_sec": beats / elapsed}
        result["steady"] |= {"script_calls": used["script_calls"]}
        result["steady"] |= {"redis_script_usec_per_heartbeat": used["script_usec"] / beats}
        result["steady"] |= {"redis_cpu_usec_per_heartbeat": 1e6 * used["cpu_secs"] / beats}
        result["steady"] |= {"redis_cpu_share": used["cpu_secs"] / elapsed, "client_cpu_share": client_cpu / elapsed}
        result["steady"] |= {"client_cpu_usec_per_heartbeat": 1e6 * client_cpu / beats}

        # 3. idle sweeps: the standing cost of W sweepers with nobody expiring.
        async def idle_sweeps(store: RedisStore, until: float) -> int:
            sweeps = 0
            while time.perf_counter() < until:
                await asyncio.sleep(sweep_secs * random.uniform(0.75, 1.25))
                await store.asweep(time.time(), 3600.0)
                sweeps += 1
            return sweeps

        before, until = await self.redis_used(), time.perf_counter() + args.seconds
        sweeps = sum(await asyncio.gather(*(idle_sweeps(store, until) for store in stores)))
        used = await self.redis_used(before)
        result["idle_sweeps"] = {"sweeps": sweeps, "sweep_secs": sweep_secs}
        result["idle_sweeps"]["redis_script_usec_per_sweep"] = used["script_usec"] / max(1, used["script_calls"])
        result["idle_sweeps"]["redis_cpu_share"] = used["cpu_secs"] / args.seconds

        # 4. offline lag: one last heartbeat for everyone, then silence. The services' own publishing (bounded
        # concurrency, through realtime.apublish), timed per event.
        last_beat, lags, taken_by, done = time.time(), [], [0] * args.workers, asyncio.Event()
        await asyncio.gather(*(store.abeat(share, last_beat) for store, share in workers))
        real_apublish = services.apublish

        async def timed_apublish(topic: str, event_type: str, data: dict[str, Any]) -> None:
            await real_apublish(topic, event_type, data)
            lags.append(time.time() - (data["last_seen"] + args.offline_after))

        services.apublish = timed_apublish

        async def sweeper(index: int, store: RedisStore) -> None:
            while not done.is_set():
                await asyncio.sleep(sweep_secs * random.uniform(0.75, 1.25))
                rows = await store.asweep(time.time(), args.offline_after)
                await services._apublish_all(rows)
                taken_by[index] += len(rows)
                if len(lags) >= args.members:
                    done.set()

        await asyncio.wait_for(asyncio.gather(*(sweeper(i, s) for i, s in enumerate(stores))), self.remaining())
        assert len(lags) == args.members, "each member offline exactly once"
        lag = {f"lag_{key}_secs": value for key, value in h.percentiles(lags, (50, 99)).items()}
        result["offline_lag"] = {"members": args.members, "offline_after_secs": args.offline_after, **lag}
        result["offline_lag"] |= {"sweep_secs": sweep_secs, "lag_min_secs": min(lags), "taken_by_worker": taken_by}
        result["offline_lag"]["all_offline_after_last_beat_secs"] = max(lags) + args.offline_after
        for store in stores:
            await store.aclose()
        await self.admin.aclose()
        result.update(members=args.members, workers=args.workers, command=args.command)
        self.finish()
        return result


def render(result: dict[str, Any]) -> str:
    steady, idle, lag, burst = result["steady"], result["idle_sweeps"], result["offline_lag"], result["burst"]
    return "\n".join(
        [
            "| measure | value |",
            "| --- | --- |",
            f"| members online / workers | {result['members']:,} / {result['workers']} |",
            f"| burst: all online at once | {burst['secs'] * 1000:.0f} ms ({burst['transitions_per_sec']:,.0f} /s) |",
            f"| steady heartbeats processed | {steady['heartbeats_per_sec']:,.0f} /s |",
            f"| Redis script time per heartbeat | {steady['redis_script_usec_per_heartbeat']:.2f} us |",
            f"| Redis CPU per heartbeat | {steady['redis_cpu_usec_per_heartbeat']:.2f} us |",
            f"| client CPU per heartbeat | {steady['client_cpu_usec_per_heartbeat']:.2f} us |",
            f"| Redis / client CPU while beating | {steady['redis_cpu_share']:.0%} / "
            f"{steady['client_cpu_share']:.0%} |",
            f"| idle sweep (nobody expiring) | {idle['redis_script_usec_per_sweep']:.1f} us of Redis per sweep |",
            f"| offline lag past the threshold | p50 {lag['lag_p50_secs'] * 1000:.0f} ms, p99 "
            f"{lag['lag_p99_secs'] * 1000:.0f} ms, max {lag['lag_max_secs'] * 1000:.0f} ms |",
            f"| taken offline per worker | {', '.join(f'{n:,}' for n in lag['taken_by_worker'])} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    return h.run(Presence, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
