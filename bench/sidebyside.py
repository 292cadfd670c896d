"""Side by side with django-eventstream: both servers, one after the other, in one invocation; ratio tables.

    .venv/bin/python -m bench.sidebyside --workers 2 --rev HEAD      # defaults: see --help
    .venv/bin/python -m bench.sidebyside --subscribers 300,200 --ladder-at 200 --ladder 1000,4000 --latency-events 5

Same machine, same redis-server (one for the whole invocation, FLUSHALL between targets), same load client
(bench/loadclient.py) and same publisher (bench/fanout.py's), same N and rates. The peer is django-eventstream's
minimal project in bench/peers/eventstream, run from its own virtualenv (created on first use, see bench/peer.py).

For each target, in order:

1. Start W Daphne workers on the shared Redis, warm them up (publishes, stats, one stream per worker opened and
   closed), start the client processes, read the baseline (/proc of every worker).
2. Open max(subscribers) streams on one channel; after --settle and once the workers are idle (under 5 % of a
   core for a second, at most 60 s), read each worker's memory again: RSS, USS and PSS per stream (the
   worker's own count of streams), file descriptors. Streams per GiB = 1 GiB / RSS per stream.
3. Then for each subscriber count of --subscribers and --ladder-at, largest first (streams are closed on
   purpose down to the next count, then it waits until the workers are idle again):
   - broadcast latency (counts in --subscribers): publish --latency-events at --latency-rate and wait for
     every delivery (or --drain);
   - rate ladder (counts in --ladder-at): publish for --ladder-secs (at least 10 events) at each rate of
     --ladder, given in deliveries/s asked (events/s = deliveries/s / subscribers), rising. A step passes
     when every event was accepted, nothing was lost and p99 from POST sent to received is under 1 s. The
     ladder stops at the first step that fails or is saturated (the publisher reached under 90 % of the rate
     asked: its POSTs wait on busy workers, so asking more would not deliver more), then waits until nothing
     arrives any more. The figure is the highest deliveries/s of a step that passed.

Then it prints Markdown tables (each target's figures, and ours/theirs) and writes JSON to
bench/results/<name>-<UTC timestamp>.json (`--render FILE` prints the tables of such a file again). Every
process it started is stopped by PID at the end, also on Ctrl-C, errors and timeouts; each target is bounded
by --timeout.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import fanout, peer, procs, pyspy

LABELS = {"livesite": "livesite", "eventstream": "django-eventstream"}
GIB_KB = 1024 * 1024
P99_LIMIT_S = 1.0
MIN_RATE_SHARE = 0.9


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def float_list(text: str) -> list[float]:
    return [float(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="livesite,eventstream", help="targets, in the order run")
    parser.add_argument("--workers", type=int, default=2, help="Daphne workers per target (default 2)")
    parser.add_argument(
        "--subscribers", type=int_list, default=[10000, 5000, 1000], help="broadcast sizes (default 10000,5000,1000)"
    )
    parser.add_argument("--latency-rate", type=float, default=1.0, help="events/s of the latency steps (default 1)")
    parser.add_argument("--latency-events", type=int, default=15, help="events per latency step (default 15)")
    parser.add_argument(
        "--ladder-at", type=int_list, default=[10000, 1000], help="subscribers of the rate ladders (default 10000,1000)"
    )
    parser.add_argument(
        "--ladder",
        type=float_list,
        default=[
            5000,
            10000,
            20000,
            30000,
            40000,
            60000,
            80000,
            120000,
            160000,
            200000,
            240000,
            320000,
            400000,
            480000,
        ],
        help="deliveries/s asked, rising ('' for no ladder; default 5000,10000,20000,30000,...,480000)",
    )
    parser.add_argument("--ladder-secs", type=float, default=6.0, help="publishing time per ladder step")
    parser.add_argument("--publish-concurrency", type=int, default=8, help="keep-alive publisher connections")
    parser.add_argument("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases before measuring")
    parser.add_argument("--drain", type=float, default=20.0, help="max seconds to wait for deliveries per step")
    parser.add_argument("--timeout", type=float, default=720.0, help="bound of each target's run, seconds")
    parser.add_argument("--profile", type=int, default=0, help="py-spy each worker for this many seconds ...")
    parser.add_argument("--profile-at", type=int, default=0, help="... of this latency step (default: the largest)")
    parser.add_argument("--rev", default="", help="livesite as committed at this git revision (default: work tree)")
    parser.add_argument("--name", default="sidebyside")
    parser.add_argument("--results-dir", type=Path, default=fanout.RESULTS)
    parser.add_argument("--render", type=Path, help="only print the tables of this JSON report of an earlier run")
    args = parser.parse_args(argv)
    args.targets = [target.strip() for target in args.targets.split(",") if target.strip()]
    unknown = [target for target in args.targets if target not in fanout.TARGETS]
    if unknown or not args.targets:
        parser.error(f"--targets: choose among {', '.join(fanout.TARGETS)}")
    if not args.subscribers or min(args.subscribers) < 1 or min(args.ladder_at, default=1) < 1:
        parser.error("--subscribers and --ladder-at must be positive")
    if args.ladder and max(args.ladder_at, default=0) > max(args.subscribers):
        parser.error("--ladder-at must not exceed the largest --subscribers")
    args.subscribers = sorted(set(args.subscribers), reverse=True)
    args.ladder_at = sorted(set(args.ladder_at), reverse=True) if args.ladder else []
    args.profile_at = args.profile_at or args.subscribers[0]
    return args


def run_args(args: argparse.Namespace, target: str) -> argparse.Namespace:
    """bench/fanout.py's options for one target's run."""
    argv = [
        f"--target={target}",
        f"--workers={args.workers}",
        f"--connections={args.subscribers[0]}",
        f"--publish-concurrency={args.publish_concurrency}",
        f"--payload-bytes={args.payload_bytes}",
        f"--settle={args.settle}",
        f"--drain={args.drain}",
        f"--timeout={args.timeout}",
        f"--name={args.name}-{target}",
        f"--profile={args.profile}",  # with publish_step(profile=...): py-spy's wait is bounded by it
        f"--results-dir={args.results_dir}",
        "--warm-stream",
    ]
    if target == "livesite" and args.rev:
        argv.append(f"--rev={args.rev}")
    return fanout.parse_args(argv)


# -- one target ----------------------------------------------------------------------------------


async def trim(run: fanout.Run, targets: list[list[tuple[int, str]]], keep_total: int) -> int:
    """Close streams on purpose down to `keep_total`, evenly over the workers (the first ones assigned stay)."""
    clients = len(targets)
    for index, share in enumerate(targets):
        keep: Counter[int] = Counter()
        for position, (port, _source) in enumerate(share):
            if position * clients + index < keep_total:
                keep[port] += 1
        run.pipes[index].send(("trim", dict(keep)))
    held = sum([(await run.recv(index, 60))[1] for index in range(clients)])
    await asyncio.sleep(run.args.settle)  # the servers see the disconnects
    waited = await quiet(run)
    print(f"[{run.args.target}] {held} streams left; servers quiet after {waited:.1f} s", file=sys.stderr)
    return held


async def quiet(run: fanout.Run, limit: float = 60.0, busy: float = 0.05) -> float:
    """Wait until each worker uses under `busy` of a core over a second (at most `limit` seconds); the time waited.

    Closing thousands of streams keeps a worker busy for a while (the peer: seconds), and opening them too:
    a step measured before that is over would time the clean-up, not the broadcast.
    """
    started = time.monotonic()
    pids = [worker.pid for worker in run.workers]
    last = [procs.cpu_seconds(pid) for pid in pids]
    while time.monotonic() - started < limit:
        await asyncio.sleep(1.0)
        now = [procs.cpu_seconds(pid) for pid in pids]
        if all(end - start < busy for start, end in zip(last, now, strict=True)):
            break
        last = now
    return time.monotonic() - started


async def step(run: fanout.Run, kind: str, events: int, rate: float, held: int, profile: int = 0) -> dict[str, Any]:
    """One publishing step on the open streams: latency, throughput, losses and CPU."""
    before = dict.fromkeys(("lost", "resets"), 0)
    for reply in await run.ask_all(("status",), 30):
        for key in before:
            before[key] += reply[1][key]
    measured = await run.publish_step(events, rate, held, profile)
    results = [reply[1] for reply in await run.ask_all(("result",), 60)]
    delivered = fanout.deliveries(results, measured["publish"], held, events)
    delivered["streams_lost"] -= before["lost"]
    delivered["resets"] -= before["resets"]
    phase = fanout.cpu(
        measured["before_publish"], measured["after_publish"], measured["before_publish"], measured["before_publish"]
    )
    workers = sum(value for name, value in phase["publish"].items() if name.startswith("w"))
    publish = measured["publish"]
    result = {
        "kind": kind,
        "subscribers": held,
        "events": events,
        "rate_target": rate,
        "rate_achieved": publish["rate_achieved"],
        "accepted": publish["accepted"],
        "statuses": publish["statuses"],
        "post_latency_s": publish["post_latency_s"],
        "deliveries": {key: value for key, value in delivered.items() if key != "per_event"},
        "per_event_completion_s": [row["completion_s"] for row in delivered["per_event"]],
        "cpu": phase["publish"],
        "wall_s": phase["publish_wall_s"],
        "server_cpu_s": phase["publish_server_s"],
        "client_cpu_s": phase["publish_client_s"],
        "worker_cpu_per_delivery_us": workers / delivered["received"] * 1e6 if delivered["received"] else None,
        "worker_stats": measured["stats"],
        "loadavg_end": measured["loadavg_end"],
        "clients": [
            {key: client[key] for key in ("cpu_s", "comments", "unknown", "other_frames")} for client in results
        ],
    }
    if "profiles" in measured:
        result["profiles"] = measured["profiles"]
    result["passed"], result["saturated"] = verdict(result)
    run.check_alive()
    return result


def verdict(row: dict[str, Any]) -> tuple[bool, bool]:
    """(passed, saturated) of a step. Passed: every event accepted, nothing lost, p99 from POST sent to received
    under 1 s; its deliveries/s then count. Saturated: the publisher reached under 90 % of the rate asked (its
    POSTs wait on busy workers), so asking more would not deliver more: the ladder stops there."""
    latency = row["deliveries"]["latency_from_send_s"]["p99"]
    passed = (
        latency is not None
        and latency < P99_LIMIT_S
        and row["deliveries"]["lost"] == 0
        and row["accepted"] == row["events"]
    )
    return passed, (row["rate_achieved"] or 0) < MIN_RATE_SHARE * row["rate_target"]


async def measure(run: fanout.Run, args: argparse.Namespace) -> dict[str, Any]:
    targets, baseline = await run.prepare()
    report: dict[str, Any] = {"code": run.report["code"], "started": time.time()}
    print(f"[{run.args.target}] opening {run.args.connections} streams ...", file=sys.stderr)
    report["connect"] = await run.connect(targets)
    await asyncio.sleep(args.settle)
    report["quiet_after_connect_s"] = await quiet(run)
    run.check_alive()
    after_connect = run.snapshot()
    stats = await run.stats()
    report["memory"] = fanout.memory(run.workers, baseline, after_connect, after_connect, stats)
    report["connect_cpu"] = fanout.cpu(after_connect, after_connect, after_connect, baseline)["connect"]
    report["connect_cpu_wall_s"] = after_connect["publisher"]["time"] - baseline["publisher"]["time"]
    held = report["connect"]["held"]
    if held == 0:
        raise fanout.BenchError(f"no stream connected: {report['connect']['errors']}")

    report["latency"] = []
    report["ladders"] = {}
    for count in sorted(set(args.subscribers) | set(args.ladder_at), reverse=True):
        if count < held:
            held = await trim(run, targets, count)
        if count in args.subscribers:
            profile = args.profile if count == args.profile_at else 0
            print(f"[{run.args.target}] latency step: {held} subscribers", file=sys.stderr)
            report["latency"].append(await step(run, "latency", args.latency_events, args.latency_rate, held, profile))
        if count in args.ladder_at:
            report["ladders"][str(count)] = await ladder(run, args, count, held)
    report["log_problems"] = {worker.name: worker.log_problems()[-20:] for worker in run.workers}
    report["ended"] = time.time()
    return report


# What is running now, so that main() can stop it whatever happens (cleanups may run twice: both are idempotent).
ACTIVE: dict[str, Any] = {}


async def ladder(run: fanout.Run, args: argparse.Namespace, count: int, held: int) -> list[dict[str, Any]]:
    """Rising rates to `held` streams until a step fails; then wait until nothing arrives any more."""
    rows = []
    for deliveries in args.ladder:
        rate = round(deliveries / count, 3)
        events = max(10, round(rate * args.ladder_secs))
        print(f"[{run.args.target}] ladder step: {rate:g} events/s to {held} subscribers", file=sys.stderr)
        rows.append(await step(run, "ladder", events, rate, held))
        rows[-1]["deliveries_asked"] = deliveries
        if not rows[-1]["passed"] or rows[-1]["saturated"]:
            break
    await quiesce(run)
    return rows


async def quiesce(run: fanout.Run, limit: float = 30.0) -> None:
    """Wait (at most `limit` seconds) until the clients receive nothing for a second: a backlog left by a failed
    step would otherwise land in the next one."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        received = sum(reply[1]["received"] for reply in await run.ask_all(("status",), 30))
        if received == last:
            return
        last = received
        await asyncio.sleep(1.0)


async def run_target(target: str, args: argparse.Namespace, redis: procs.Managed) -> dict[str, Any]:
    peer.redis_command(redis.port, "FLUSHALL")
    run = ACTIVE["run"] = fanout.Run(run_args(args, target), redis=redis)
    started = os.getloadavg()
    try:
        report = await measure(run, args)
    except (fanout.BenchError, RuntimeError, subprocess.SubprocessError, OSError, TimeoutError) as exc:
        problems = {worker.name: worker.log_problems()[-10:] for worker in run.workers}
        report = {"error": f"{type(exc).__name__}: {exc}", "log_problems": problems}
        print(f"[{target}] failed: {exc}", file=sys.stderr)
    finally:
        run.cleanup()
    report["loadavg_start"], report["loadavg_end"] = started, os.getloadavg()
    return report


async def main_async(args: argparse.Namespace, stamp: str, tmp: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "stamp": stamp,
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "uptime_start": uptime(),
        "machine": fanout.machine(),
        "config": {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
    }
    if "eventstream" in args.targets:
        report["peer"] = await asyncio.to_thread(peer.ensure_peer_venv)
    redis = ACTIVE["redis"] = procs.start_redis(tmp, time.monotonic() + 30)
    report["redis"] = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    try:
        report["targets"] = {}
        for target in args.targets:
            report["targets"][target] = await run_target(target, args, redis)
    finally:
        redis.stop()
    report["uptime_end"] = uptime()
    return report


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


# -- output --------------------------------------------------------------------------------------


def idle_summary(target: dict[str, Any]) -> dict[str, Any]:
    """Totals over the workers: streams, memory per stream (KiB) and per GiB, fds."""
    rows = target["memory"]
    streams = sum(row["connections"] for row in rows)
    summary: dict[str, Any] = {"streams": streams, "fds": [row["fds"][1] for row in rows]}
    for kind in ("rss", "uss", "pss"):
        delta = sum(row[f"{kind}_kb"][1] - row[f"{kind}_kb"][0] for row in rows)
        per = delta / streams if streams else None
        summary[f"{kind}_per_stream_kb"] = per
        summary[f"{kind}_per_gib"] = GIB_KB / per if per else None
    cpu = target["connect_cpu"]
    workers = sum(value for name, value in cpu.items() if name.startswith("w"))
    summary["worker_cpu_per_connect_ms"] = workers / streams * 1000 if streams else None
    return summary


def best_ladder(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    passed = [row for row in rows if verdict(row)[0]]
    return max(passed, key=lambda row: row["deliveries"]["per_s"] or 0) if passed else None


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "-"
    if theirs == 0:
        return "∞" if ours > 0 else "-"
    value = ours / theirs
    return f"{value:.2g}" if value < 0.1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def step_row(label: str, row: dict[str, Any]) -> str:
    dl = row["deliveries"]
    lat, latp = dl["latency_from_send_s"], dl["latency_from_published_at_s"]
    lost = f"{dl['lost']:,}" + (
        f" ({dl['lost'] / dl['expected'] * 100:.1f} %)" if dl["lost"] and dl["expected"] else ""
    )
    cpu = row["cpu"]
    clients = sum(value for name, value in cpu.items() if name.startswith("client"))
    return (
        f"| {label} | {row['subscribers']:,} | {num(row['rate_achieved'], 1)} of {row['rate_target']:g} | "
        f"{ms(lat['p50'])} / {ms(lat['p99'])} / {ms(lat['max'])} | {ms(latp['p50'])} / {ms(latp['p99'])} | "
        f"{ms(dl['completion_s']['p99'])} | {num(dl['per_s'])} | {lost} | "
        f"{num(row['worker_cpu_per_delivery_us'], 1)} | "
        f"{row['server_cpu_s']:.1f} / {clients:.1f} + {cpu.get('publisher', 0):.1f} / {cpu['others']:.1f} over "
        f"{row['wall_s']:.1f} s |"
    )


def code_line(code: dict[str, Any]) -> str:
    return f"{code.get('rev', '-')} (commit {str(code.get('commit', '-'))[:10]})"


def render(report: dict[str, Any]) -> str:
    config, machine = report["config"], report["machine"]
    targets = report["targets"]
    names = [name for name in config["targets"] if "error" not in targets[name]]
    lines = [
        f"### Side by side with django-eventstream ({report['date']})",
        "",
        f"- Machine: {machine['nproc']} cores, {machine['mem_gib']} GiB, Linux {machine['kernel']}, Python "
        f"{machine['python']}; {report.get('redis', 'redis-server')}, one server for both targets.",
        f"- `uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`.",
        f"- livesite: {code_line(targets.get('livesite', {}).get('code', {}))}.",
        f"- django-eventstream: {report.get('peer', {}).get('packages', '-')} in its own virtualenv, configured as "
        "its README says for several processes (`EVENTSTREAM_REDIS`), no event storage, no middleware.",
        f"- {config['workers']} Daphne workers per target; one load client process; latency steps "
        f"{config['latency_events']} events at {config['latency_rate']:g}/s; ladders at "
        f"{', '.join(f'{count:,}' for count in config['ladder_at']) or '-'} subscribers, {config['ladder_secs']:g} s "
        f"per step; publisher: {config['publish_concurrency']} keep-alive "
        "connections round-robin over the workers.",
    ]
    for name in config["targets"]:
        if "error" in targets[name]:
            lines.append(f"- **{LABELS[name]} failed**: {targets[name]['error']}")
    lines += ["", f"Idle streams (after connecting {config['subscribers'][0]:,}):", ""]
    lines += ["| measure | " + " | ".join(LABELS[name] for name in names) + " |", "| --- |" + " ---: |" * len(names)]
    summaries = {name: idle_summary(targets[name]) for name in names}

    def idle_row(label: str, cell: Any) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(name) for name in names) + " |")

    idle_row(
        "streams held",
        lambda n: (
            f"{targets[n]['connect']['held']:,} of {targets[n]['connect']['requested']:,}"
            + (f" (failed {targets[n]['connect']['failed']:,})" if targets[n]["connect"]["failed"] else "")
        ),
    )
    idle_row(
        "connect rate; time to held p50 / p99",
        lambda n: (
            f"{num(targets[n]['connect']['rate_per_s'])}/s; "
            f"{ms(targets[n]['connect']['time_to_connected_s']['p50'])} / "
            f"{ms(targets[n]['connect']['time_to_connected_s']['p99'])} ms"
        ),
    )
    idle_row("worker CPU per stream opened", lambda n: f"{num(summaries[n]['worker_cpu_per_connect_ms'], 2)} ms")
    idle_row("RSS per stream", lambda n: f"{num(summaries[n]['rss_per_stream_kb'], 1)} KiB")
    idle_row("USS per stream", lambda n: f"{num(summaries[n]['uss_per_stream_kb'], 1)} KiB")
    idle_row("streams per GiB (RSS)", lambda n: num(summaries[n]["rss_per_gib"]))
    idle_row("fds per worker", lambda n: ", ".join(str(fds) for fds in summaries[n]["fds"]))
    header = (
        "| target | subscribers | events/s reached of asked | POST sent -> received p50 / p99 / max (ms) | "
        "`published_at` -> received p50 / p99 (ms) | completion p99 (ms) | deliveries/s | lost | "
        "worker CPU per delivery (µs) | CPU s: server / client + publisher / other processes |"
    )
    separator = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    lines += ["", f"Broadcast latency at {config['latency_rate']:g} events/s:", "", header, separator]
    for index in range(len(config["subscribers"])):
        for name in names:
            rows = targets[name]["latency"]
            if index < len(rows):
                lines.append(step_row(LABELS[name], rows[index]))
    for count in config["ladder_at"]:
        lines += [
            "",
            f"Rate ladder at {count:,} subscribers (pass: all accepted, nothing lost, p99 < 1 s; saturated: the "
            "publisher reached under 90 % of the rate asked):",
        ]
        lines += ["", header.replace("| CPU s:", "| pass | CPU s:"), separator[: -len(" --- |")] + " :-: | --- |"]
        for name in names:
            for row in targets[name]["ladders"].get(str(count), []):
                cells = step_row(LABELS[name], row).rsplit(" | ", 1)
                passed, saturated = verdict(row)
                mark = ("yes" if passed else "**no**") + (", saturated" if saturated else "")
                lines.append(f"{cells[0]} | {mark} | {cells[1]}")
    if "livesite" in names and "eventstream" in names:
        lines += ratio_table(report, summaries)
    for name in names:
        for row in targets[name]["latency"]:
            for profile in row.get("profiles", []):
                text = profile.get("error") or pyspy.render(profile)
                lines += ["", f"py-spy {LABELS[name]} {profile['worker']} ({row['subscribers']:,} subscribers): {text}"]
    for name in names:
        problems = {worker: lines_ for worker, lines_ in targets[name].get("log_problems", {}).items() if lines_}
        if problems:
            lines += ["", f"{LABELS[name]} worker log problems: {str(problems)[:1500]}"]
    return "\n".join(lines)


def ratio_table(report: dict[str, Any], summaries: dict[str, dict[str, Any]]) -> list[str]:
    targets = report["targets"]
    ours, theirs = targets["livesite"], targets["eventstream"]
    lines = [
        "",
        "Ours / theirs (higher is better for streams per GiB and deliveries/s, lower for latency):",
        "",
        "| measure | livesite | django-eventstream | ours / theirs |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind in ("rss", "uss"):
        a, b = summaries["livesite"][f"{kind}_per_gib"], summaries["eventstream"][f"{kind}_per_gib"]
        lines.append(f"| streams per GiB ({kind.upper()}) | {num(a)} | {num(b)} | {ratio(a, b)} |")

    def best(rows: list[dict[str, Any]]) -> tuple[float | None, str, bool]:
        """(deliveries/s, text, whether it is an upper bound): below the first rate asked if none passed."""
        if not rows:
            return None, "-", False
        row = best_ladder(rows)
        if row is None:
            return rows[0]["deliveries_asked"], f"none passed (< {num(rows[0]['deliveries_asked'])})", True
        reached = f"{row['rate_achieved']:.1f} events/s"
        return row["deliveries"]["per_s"], f"{num(row['deliveries']['per_s'])} ({reached})", False

    for count in report["config"]["ladder_at"]:
        value_a, text_a, _ = best(ours["ladders"].get(str(count), []))
        value_b, text_b, upper_bound = best(theirs["ladders"].get(str(count), []))
        lines.append(
            f"| deliveries/s with p99 < 1 s, {count:,} subscribers | {text_a} | {text_b} | "
            f"{'> ' if upper_bound else ''}{ratio(value_a, value_b)} |"
        )
    # Steps in the same order for both: --subscribers, largest first (streams held may fall short of asked).
    for row_a, row_b, asked in zip(ours["latency"], theirs["latency"], report["config"]["subscribers"], strict=False):
        la, lb = row_a["deliveries"]["latency_from_send_s"], row_b["deliveries"]["latency_from_send_s"]
        lines.append(
            f"| broadcast latency to {asked:,}, p50 / p99 (ms) | {ms(la['p50'])} / {ms(la['p99'])} | "
            f"{ms(lb['p50'])} / {ms(lb['p99'])} | {ratio(la['p50'], lb['p50'])} / {ratio(la['p99'], lb['p99'])} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    procs.raise_nofile_limit()

    procs.interrupt_on_signals()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sidebyside-"))
    try:
        report = asyncio.run(main_async(args, stamp, tmp))
    except KeyboardInterrupt:
        print("interrupted: stopping everything this run started", file=sys.stderr)
        return 130
    finally:
        if "run" in ACTIVE:
            ACTIVE["run"].cleanup()
        if "redis" in ACTIVE:
            ACTIVE["redis"].stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(render(report))
    print(f"\nJSON: {procs.write_report(report, args.results_dir)}")
    failed = [name for name, target in report["targets"].items() if "error" in target]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
