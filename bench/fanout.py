"""Broadcast fan-out: N SSE streams on one topic over W Daphne workers; publish M events; measure.

    .venv/bin/python -m bench.fanout --workers 2 --connections 1000
    .venv/bin/python -m bench.fanout --workers 2 --connections 1000 --server uvicorn   # same app under uvicorn

Its own redis-server and W workers on free loopback ports (bench/harness.py); N streams (`GET /realtime/connect?
topics=bench.shared`) round-robin over the workers from C client processes and K source addresses 127.0.0.x; M
events through `POST /api/publish` at a fixed rate, round-robin over the workers. Reports streams held, memory per
stream (RSS, PSS, USS), fds, publish-to-receive latency, fan-out completion per event, deliveries/s, losses and the
CPU of servers and client. `--server uvicorn` runs the workers under uvicorn (uvloop, httptools) instead of
Daphne (`python -m livesite.serve`): the same app, everything else alike. `--target eventstream` measures
django-eventstream's minimal project instead (bench/peers/eventstream, its own virtualenv) with the same client
and publisher: streams `GET /events/?channel=` (held at their first bytes: no `connected` frame), publishes
`POST /publish`, stats `GET /stats`.
"""

import argparse
import asyncio
import json
import re
import sys
from typing import Any

from bench import harness as h

# As bench/publish_many.py and tests/system/harness.py start it; its default accept queue is 2048.
WHAT_IF = ("--rev", "--worker-gc-stats", "--worker-gc-threshold", "--worker-gc-freeze", "--worker-uvloop")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("livesite", "eventstream"), default="livesite", help="server measured")
    parser.add_argument("--workers", type=int, default=2, help="workers (default 2)")
    parser.add_argument("--server", choices=h.SERVERS, default="daphne", help="livesite's workers run under (daphne)")
    parser.add_argument("--connections", type=int, default=1000, help="SSE streams to open (default 1000)")
    parser.add_argument("--events", type=int, default=100, help="events to publish (default 100)")
    parser.add_argument("--rate", type=float, default=10.0, help="events published per second (default 10)")
    parser.add_argument(
        "--rates", default="", help="several steps on the same streams, e.g. 0.5,1: --events at each (default: --rate)"
    )
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between steps")
    parser.add_argument("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    parser.add_argument("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    parser.add_argument("--topic", default="bench.shared")
    parser.add_argument("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    parser.add_argument("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    parser.add_argument("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    parser.add_argument("--publish-concurrency", type=int, default=4, help="keep-alive publisher connections")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases before measuring")
    parser.add_argument("--drain", type=float, default=20.0, help="max seconds to wait after the last publish")
    parser.add_argument("--profile", type=int, default=0, help="py-spy each worker for this many seconds")
    parser.add_argument(
        "--profile-rate", type=float, default=0, help="the last step at this rate is profiled (default: the last step)"
    )
    parser.add_argument("--profile-native", action="store_true", help="py-spy --native (C frames; pauses workers)")
    parser.add_argument(
        "--lean-client",
        action="store_true",
        help="the load client keeps no per-delivery latency, only each event's count and first/last receipt",
    )
    parser.add_argument(
        "--client-nap-ms",
        type=float,
        default=0.0,
        help="the load client reads in batches, sleeping this long between turns of its loop (adds to latency)",
    )
    parser.add_argument("--warm-stream", action="store_true", help="open and close a stream per worker first")
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
        help="a worker setting, e.g. REALTIME_FLUSH_MS=0 (repeatable; livesite's own knobs are otherwise cleared)",
    )
    h.add_common_options(parser, "fanout-w<W>-c<N>", 300.0)
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()] or [args.rate]
    except ValueError:
        parser.error("--rates is comma-separated numbers")
    if args.workers < 1 or args.connections < 1 or args.events < 1 or min(args.rates) <= 0:
        parser.error("--workers, --connections, --events and --rate(s) must be positive")
    h.streams_and_sources(parser, args, args.connections, args.workers)
    given = [option for option in (*WHAT_IF, "--worker-env") if getattr(args, option[2:].replace("-", "_"))]
    if args.target != "livesite" and given:
        parser.error(f"{', '.join(given)}: livesite only")
    if args.target != "livesite" and args.server != "daphne":
        parser.error("--server: livesite only")
    if args.server == "uvicorn" and args.worker_uvloop:
        parser.error("--worker-uvloop: Daphne only (uvicorn runs on uvloop already)")
    prefix = "fanout" if args.target == "livesite" else f"fanout-{args.target}"
    server = "" if args.server == "daphne" else f"-{args.server}"
    args.name = args.name or f"{prefix}{server}-w{args.workers}-c{args.connections}"
    return args


def what_if_env(args: argparse.Namespace) -> dict[str, str]:
    """Environment for bench/sitehooks when a what-if option is given, and --worker-env; else nothing."""
    env = {"BENCH_GC_STATS": "1"} if args.worker_gc_stats else {}
    env |= {"BENCH_GC_THRESHOLD": args.worker_gc_threshold} if args.worker_gc_threshold else {}
    env |= {"BENCH_GC_FREEZE_SECS": str(args.worker_gc_freeze)} if args.worker_gc_freeze else {}
    env |= {"BENCH_UVLOOP": "1"} if args.worker_uvloop else {}
    return env | dict(setting.partition("=")[::2] for setting in args.worker_env)


class Fanout(h.Harness):
    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        report["server"] = args.server
        env = what_if_env(args)
        if set(env) & {"BENCH_GC_STATS", "BENCH_GC_THRESHOLD", "BENCH_GC_FREEZE_SECS", "BENCH_UVLOOP"}:
            env["PYTHONPATH"] = f"{h.HOOKS}:{self.site_root()}"
        await self.start_site(args.workers, **env)
        await self.warm_up(streams=args.warm_stream)
        shares = self.spread(self.workers, args.connections, args.clients, args.sources)
        config = {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        config |= {"latencies": not args.lean_client, "nap_secs": args.client_nap_ms / 1000}
        report["connect"], samples = await self.open_streams(shares, self.stream_request([args.topic]), **config)
        stats_connected = await self.stats()
        held = report["connect"]["held"]
        # The last step at --profile-rate is profiled (--rates 0.5,1,1: the first 1/s step is measured unprofiled).
        wanted = args.profile_rate or args.rates[-1]
        profiled = max((i for i, rate in enumerate(args.rates) if rate == wanted), default=-1)
        report["steps"] = []
        for index, rate in enumerate(args.rates):
            if index:
                await asyncio.sleep(min(args.pause, self.remaining()))
            profile = args.profile if index == profiled else 0
            step = await self.broadcast_step(args.topic, args.events, rate, held, profile)
            # Each step's deliveries are read before the next `expect` starts the clients' records anew.
            results = await self.ask_all(("result",), 60)
            before, after = step["before_publish"], step["after_publish"]
            summary = {key: step[key] for key in ("publish", "drain", "gc", "loadavg_end", "profiles") if key in step}
            summary |= {"rate": rate, "worker_stats": step["stats"], "samples": {"before": before, "after": after}}
            summary["deliveries"] = h.deliveries(results, step["publish"], held, args.events)
            summary["cpu"] = h.cpu_deltas(before, after)
            summary["kernel_cpu"] = kernel_deltas(before, after)
            summary["clients"] = [{key: result[key] for key in ("cpu_s", "comments", "unknown")} for result in results]
            report["steps"].append(summary)
            self.check_alive()
        results = await self.ask_all(("stop",), 60)
        self.finish()
        baseline, after_connect = samples["baseline"], samples["after_connect"]
        after = report["steps"][-1]["samples"]["after"]
        report["samples"] = samples
        report["worker_stats"] = {"after_connect": stats_connected}
        phases = (baseline, after_connect, after)
        report["memory"] = [h.memory_row(w.name, stats_connected[w.name]["connections"], *phases) for w in self.workers]
        report["cpu"] = {"connect": h.cpu_deltas(baseline, after_connect)}
        keys = ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames")
        report["clients"] = [{key: result[key] for key in keys} for result in results]
        return report


def kernel_deltas(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """Kernel CPU seconds per process between two snapshots (the `sys_s` of each reading, where present)."""
    names = [name for name in end if name != "machine" and "sys_s" in end[name] and "sys_s" in start.get(name, {})]
    return {name: round(end[name]["sys_s"] - start[name]["sys_s"], 3) for name in names}


def render_step(args: dict[str, Any], step: dict[str, Any], cores: int) -> list[str]:
    pub, dl, cpu = step["publish"], step["deliveries"], step["cpu"]
    workers_cpu = h.worker_cpu(cpu)
    per_delivery = f"{workers_cpu / dl['received'] * 1e6:.1f} µs" if dl["received"] else "-"
    clients_cpu = sum(value for name, value in cpu.items() if name.startswith("client"))
    client_per = f"{clients_cpu / dl['received'] * 1e6:.1f} µs" if dl["received"] else "-"
    kernel = step.get("kernel_cpu", {})
    workers_sys = sum(value for name, value in kernel.items() if re.fullmatch(r"w\d+", name))
    clients_sys = sum(value for name, value in kernel.items() if name.startswith("client"))
    wall = cpu.get("wall_s") or 1.0
    post = pub["post_latency_s"]
    return [
        f"#### step: {step['rate']:g} events/s asked, {pub['events']} events",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| published | {pub['accepted']} of {pub['events']} accepted ({pub['statuses']}), "
        f"{pub['rate_achieved'] or 0:.2f} events/s (target {pub['rate_target']:g}); POST p50 {h.ms(post['p50'])} ms, "
        f"p99 {h.ms(post['p99'])} ms |",
        f"| **fan-out completion per event, POST sent -> last stream (ms)** | {h.pct(dl['completion_s'])} "
        f"({dl['events_complete']} of {pub['events']} events complete) |",
        f"| first -> last delivery of an event (ms) | {h.pct(dl['first_to_last_s'])} |",
        f"| latency of each delivery, POST sent -> received (ms) | {h.pct(dl['latency_from_send_s'])} |",
        f"| deliveries | {dl['received']:,} of {dl['expected']:,}: lost {dl['lost']:,}, duplicates "
        f"{dl['duplicates']}, streams closed {dl['streams_lost']}, resets {dl['resets']} |",
        f"| deliveries/s (first POST -> last delivery, {dl['window_s']:.1f} s) | {dl['per_s'] or 0:,.0f} |",
        f"| CPU per delivery: workers / load client | {per_delivery} / {client_per} |",
        f"| CPU while publishing | {h.cpu_line(cpu, cores)} |",
        f"| of which kernel (sys) | workers {workers_sys:.1f} s, load client {clients_sys:.1f} s |",
        f"| cores busy: workers / load client | {workers_cpu / wall:.2f} / {clients_cpu / wall:.2f} |",
    ]


def render(report: dict[str, Any]) -> str:
    args, cores = report["config"], report["machine"]["nproc"]
    conn, cpu = report["connect"], report["cpu"]
    errors = ", ".join(f"{name} x{count}" for name, count in conn["errors"].items()) or "none"
    ready = "first bytes" if args.get("target", "livesite") != "livesite" else "`connected`"
    ttc = conn["time_to_connected_s"]
    lines = [
        f"### {args['name']} ({report['stamp']}, code {h.code_label(report)})",
        "",
        *([f"Workers under {report['server']}.", ""] if report.get("server") else []),
        "| measure | value |",
        "| --- | --- |",
        f"| streams held | {conn['held']:,} of {conn['requested']:,} ({args['workers']} workers, {args['clients']} "
        f"client process(es), {args['sources']} source address(es)); failed: {errors} |",
        f"| connect | {conn['wall_s']:.2f} s, {conn['rate_per_s'] or 0:,.0f} streams/s; time to {ready} "
        f"p50 {h.ms(ttc['p50'])} ms, p99 {h.ms(ttc['p99'])} ms |",
        f"| CPU while connecting | {h.cpu_line(cpu['connect'], cores)} |",
        f"| load average (1/5/15 min) start -> end | {h.load_line(report)} |",
        "",
        *h.memory_table(report["memory"], "before -> connected -> published"),
    ]
    for step in report["steps"]:
        lines += ["", *render_step(args, step, cores)]
        for name, gc in step.get("gc", {}).items():
            lines += ["", f"{name} garbage collections while publishing (gen0/gen1/gen2): {gc['collections']}, "]
            lines[-1] += f"seconds {gc['seconds']} (threshold {gc['threshold']})"
        for profile in step.get("profiles", []):
            lines += ["", f"py-spy {profile['worker']}: " + (profile.get("error") or h.render_profile(profile))]
    what_if = {key: value for key, value in args.items() if key.startswith("worker_") and value}
    lines += ["", f"what-if hooks in the workers: {what_if}"] if what_if else []
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {json.dumps(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Fanout, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
