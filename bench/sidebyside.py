"""Side by side with django-eventstream: both servers, one after the other, in one invocation; ratio tables.

    .venv/bin/python -m bench.sidebyside --workers 2 --rev HEAD      # defaults: see --help
    .venv/bin/python -m bench.sidebyside --subscribers 300,200 --ladder-at 200 --ladder 1000,4000 --latency-events 5

Same machine, same redis-server (FLUSHALL between targets), same load client and publisher (bench/harness.py), same
N and rates. The peer is django-eventstream's minimal project in bench/peers/eventstream, run from its own
virtualenv (created on first use). For each target, in order:
1. W Daphne workers on the shared Redis, warmed up (publishes, stats, one stream per worker opened and closed);
   the client process started; the baseline read (/proc of every worker).
2. max(subscribers) streams opened on one channel; after --settle and once the workers are idle (under 5 % of a
   core for a second, at most 60 s): memory per stream (RSS, USS, PSS; the worker's own count of streams), fds.
   Streams per GiB = 1 GiB / RSS per stream.
3. For each count of --subscribers and --ladder-at, largest first (streams closed on purpose down to the count,
   then idle again): broadcast latency (--subscribers: --latency-events at --latency-rate, wait for every
   delivery or --drain); rate ladder (--ladder-at: --ladder-secs, at least 10 events, at each rate of --ladder in
   deliveries/s asked, rising). A step passes when every event was accepted, nothing was lost and p99 from POST
   sent to received is under 1 s; the ladder stops at the first step that fails or is saturated (the publisher
   reached under 90 % of the rate asked), then waits until nothing arrives. The figure is the highest
   deliveries/s of a step that passed.
`--render FILE` prints the tables of an earlier JSON report again. Each target is bounded by --timeout.
"""

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import harness as h

LABELS = {"livesite": "livesite", "eventstream": "django-eventstream"}
TOPIC = "bench.shared"
LADDER = "5000,10000,20000,30000,40000,60000,80000,120000,160000,200000,240000,320000,400000,480000"


def numbers(kind: type) -> Any:
    return lambda text: [kind(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--targets", default="livesite,eventstream", help="targets, in the order run")
    add("--workers", type=int, default=2, help="Daphne workers per target (default 2)")
    add(
        "--subscribers",
        type=numbers(int),
        default=[10000, 5000, 1000],
        help="broadcast sizes (default 10000,5000,1000)",
    )
    add("--latency-rate", type=float, default=1.0, help="events/s of the latency steps (default 1)")
    add("--latency-events", type=int, default=15, help="events per latency step (default 15)")
    add("--ladder-at", type=numbers(int), default=[10000, 1000], help="subscribers of the ladders (default 10000,1000)")
    add("--ladder", type=numbers(float), default=numbers(float)(LADDER), help="deliveries/s asked, rising ('': none)")
    add("--ladder-secs", type=float, default=6.0, help="publishing time per ladder step")
    add("--publish-concurrency", type=int, default=8, help="keep-alive publisher connections")
    add("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    add("--settle", type=float, default=2.0, help="seconds between phases before measuring")
    add("--drain", type=float, default=20.0, help="max seconds to wait for deliveries per step")
    add("--profile", type=int, default=0, help="py-spy each worker for this many seconds ...")
    add("--profile-at", type=int, default=0, help="... of this latency step (default: the largest)")
    add("--render", type=Path, help="only print the tables of this JSON report of an earlier run")
    h.add_common_options(parser, "sidebyside", 720.0)
    parser.set_defaults(name="sidebyside")
    args = parser.parse_args(argv)
    args.targets = [target.strip() for target in args.targets.split(",") if target.strip()]
    if not args.targets or set(args.targets) - set(LABELS):
        parser.error(f"--targets: choose among {', '.join(LABELS)}")
    if not args.subscribers or min(args.subscribers) < 1 or min(args.ladder_at, default=1) < 1:
        parser.error("--subscribers and --ladder-at must be positive")
    if args.ladder and max(args.ladder_at, default=0) > max(args.subscribers):
        parser.error("--ladder-at must not exceed the largest --subscribers")
    args.subscribers = sorted(set(args.subscribers), reverse=True)
    args.ladder_at = sorted(set(args.ladder_at), reverse=True) if args.ladder else []
    args.profile_at = args.profile_at or args.subscribers[0]
    args.clients = args.sources = 0
    h.streams_and_sources(parser, args, args.subscribers[0], args.workers)
    return args


def verdict(row: dict[str, Any]) -> tuple[bool, bool]:
    """(passed, saturated) of a step. Passed: every event accepted, nothing lost, p99 from POST sent to received
    under 1 s. Saturated: the publisher reached under 90 % of the rate asked (its POSTs wait on busy workers), so
    asking more would not deliver more: the ladder stops there."""
    latency = row["deliveries"]["latency_from_send_s"]["p99"]
    passed = latency is not None and latency < 1.0 and row["deliveries"]["lost"] == 0
    return passed and row["accepted"] == row["events"], (row["rate_achieved"] or 0) < 0.9 * row["rate_target"]


class SideBySide(h.Harness):
    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        if "eventstream" in args.targets:
            report["peer"] = await asyncio.to_thread(h.ensure_peer_venv)
        self.start_redis()
        version = [shutil.which("redis-server") or "redis-server", "--version"]
        report["redis"] = subprocess.run(version, capture_output=True, text=True, check=False).stdout.strip()
        report["targets"] = {}
        for target in args.targets:
            self.target, self.deadline = target, time.monotonic() + args.timeout
            h.devredis.command(self.redis[0].port, "FLUSHALL")
            started = os.getloadavg()
            try:
                result = await self.measure()
            except (h.BenchError, *h.FAILURES) as exc:
                result = {"error": f"{type(exc).__name__}: {exc}"}
                result["log_problems"] = {worker.name: worker.log_problems()[-10:] for worker in self.workers}
                print(f"[{target}] failed: {exc}", file=sys.stderr)
            finally:
                self.stop_processes(keep_redis=True)
            report["targets"][target] = result | {"loadavg_start": started, "loadavg_end": os.getloadavg()}
        self.finish()
        report["exit_status"] = 1 if any("error" in target for target in report["targets"].values()) else 0
        return report

    async def measure(self) -> dict[str, Any]:
        args = self.args
        count = args.subscribers[0]
        await self.start_site(args.workers)
        await self.warm_up(streams=True)
        result: dict[str, Any] = {"code": self.report["code"], "started": time.time()}
        shares = self.spread(self.workers, count, args.clients, args.sources)
        result["connect"], samples = await self.open_streams(shares, self.stream_request([TOPIC]))
        result["quiet_after_connect_s"] = await self.quiet()
        baseline, after, stats = samples["baseline"], self.snapshot(), await self.stats()
        result["memory"] = [h.memory_row(w.name, stats[w.name]["connections"], baseline, after) for w in self.workers]
        result["connect_cpu"] = h.cpu_deltas(baseline, after)
        held, result["latency"], result["ladders"] = result["connect"]["held"], [], {}
        for count in sorted(set(args.subscribers) | set(args.ladder_at), reverse=True):
            if count < held:
                held = await self.trim(count)
            if count in args.subscribers:
                profile = args.profile if count == args.profile_at else 0
                print(f"[{self.target}] latency step: {held} subscribers", file=sys.stderr)
                result["latency"].append(
                    await self.step("latency", args.latency_events, args.latency_rate, held, profile)
                )
            if count in args.ladder_at:
                result["ladders"][str(count)] = await self.ladder(count, held)
        result["log_problems"] = {worker.name: worker.log_problems()[-20:] for worker in self.workers}
        return result | {"ended": time.time()}

    async def trim(self, keep_total: int) -> int:
        """Close streams on purpose down to `keep_total`, evenly over the workers (the first ones spread stay)."""
        kept = self.spread(self.workers, keep_total, self.args.clients, self.args.sources)
        held = 0
        for client, share in zip(self.clients, kept, strict=True):
            held += await client.ask(("trim", dict(Counter(port for port, _source in share))), self.remaining(60))
        await asyncio.sleep(self.args.settle)  # the servers see the disconnects
        waited = await self.quiet()
        print(f"[{self.target}] {held} streams left; servers quiet after {waited:.1f} s", file=sys.stderr)
        return held

    async def quiet(self, limit: float = 60.0, busy: float = 0.05) -> float:
        """Wait until each worker uses under `busy` of a core over a second (at most `limit` s); the time waited.
        Closing or opening thousands of streams keeps a worker busy for a while (the peer: seconds)."""
        started = time.monotonic()
        last = [h.cpu_seconds(worker.pid) for worker in self.workers]
        while time.monotonic() - started < limit:
            await asyncio.sleep(1.0)
            now = [h.cpu_seconds(worker.pid) for worker in self.workers]
            if all(end - start < busy for start, end in zip(last, now, strict=True)):
                break
            last = now
        return time.monotonic() - started

    async def step(self, kind: str, events: int, rate: float, held: int, profile: int = 0) -> dict[str, Any]:
        """One publishing step on the open streams: latency, throughput, losses and CPU."""
        before = await self.ask_all(("status",), 30)
        measured = await self.broadcast_step(TOPIC, events, rate, held, profile)
        results = await self.ask_all(("result",), 60)
        delivered = h.deliveries(results, measured["publish"], held, events)
        delivered["streams_lost"] -= sum(status["lost"] for status in before)
        delivered["resets"] -= sum(status["resets"] for status in before)
        start, end = measured["before_publish"], measured["after_publish"]
        cpu = h.cpu_deltas(start, end)
        workers = h.worker_cpu(cpu)
        publish = measured["publish"]
        row = {key: publish[key] for key in ("rate_achieved", "accepted", "statuses", "post_latency_s")}
        row |= {"kind": kind, "subscribers": held, "events": events, "rate_target": rate}
        row |= {
            "deliveries": {key: value for key, value in delivered.items() if key != "per_event"},
            "per_event_completion_s": [event["completion_s"] for event in delivered["per_event"]],
            "cpu": cpu,
            "wall_s": cpu["wall_s"],
            "worker_cpu_per_delivery_us": workers / delivered["received"] * 1e6 if delivered["received"] else None,
            "worker_stats": measured["stats"],
            "loadavg_end": measured["loadavg_end"],
            "clients": [{key: c[key] for key in ("cpu_s", "comments", "unknown", "other_frames")} for c in results],
        }
        row["server_cpu_s"], row["client_cpu_s"] = h.cpu_split(cpu)
        row |= {"profiles": measured["profiles"]} if "profiles" in measured else {}
        row["passed"], row["saturated"] = verdict(row)
        self.check_alive()
        return row

    async def ladder(self, count: int, held: int) -> list[dict[str, Any]]:
        """Rising rates to `held` streams until a step fails; then wait until nothing arrives any more (a backlog
        left by a failed step would otherwise land in the next one)."""
        rows = []
        for deliveries in self.args.ladder:
            rate = round(deliveries / count, 3)
            print(f"[{self.target}] ladder step: {rate:g} events/s to {held} subscribers", file=sys.stderr)
            rows.append(await self.step("ladder", max(10, round(rate * self.args.ladder_secs)), rate, held))
            rows[-1]["deliveries_asked"] = deliveries
            if not rows[-1]["passed"] or rows[-1]["saturated"]:
                break
        deadline, last = time.monotonic() + 30, -1
        while time.monotonic() < deadline:
            received = sum(status["received"] for status in await self.ask_all(("status",), 30))
            if received == last:
                break
            last = received
            await asyncio.sleep(1.0)
        return rows


def idle_summary(target: dict[str, Any]) -> dict[str, Any]:
    """Totals over the workers: streams, memory per stream (KiB) and per GiB, fds, worker CPU per stream opened."""
    rows = target["memory"]
    streams = sum(row.get("streams", row.get("connections", 0)) for row in rows)  # "connections": older reports
    summary: dict[str, Any] = {"streams": streams, "fds": [row["fds"][1] for row in rows]}
    for kind in ("rss", "uss", "pss"):
        per = sum(row[f"{kind}_kb"][1] - row[f"{kind}_kb"][0] for row in rows) / streams if streams else None
        summary[f"{kind}_per_stream_kb"], summary[f"{kind}_per_gib"] = per, 1024 * 1024 / per if per else None
    workers = h.worker_cpu(target["connect_cpu"])
    summary["worker_cpu_per_connect_ms"] = workers / streams * 1000 if streams else None
    return summary


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.0f}" if value >= 0.1 else f"{value * 1000:.1f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or (theirs == 0 and ours <= 0):
        return "-"
    if theirs == 0:
        return "∞"
    value = ours / theirs
    return f"{value:.2g}" if value < 0.1 else f"{value:.2f}" if value < 10 else f"{value:.1f}"


def step_row(label: str, row: dict[str, Any], mark: str = "") -> str:
    dl, cpu = row["deliveries"], row["cpu"]
    lat, latp = dl["latency_from_send_s"], dl["latency_from_published_at_s"]
    lost = f"{dl['lost']:,}" + (
        f" ({dl['lost'] / dl['expected'] * 100:.1f} %)" if dl["lost"] and dl["expected"] else ""
    )
    clients = sum(value for name, value in cpu.items() if name.startswith("client"))
    publisher = cpu.get("bench", cpu.get("publisher", 0))  # "publisher": older reports
    return (
        f"| {label} | {row['subscribers']:,} | {h.num(row['rate_achieved'], 1)} of {row['rate_target']:g} | "
        f"{ms(lat['p50'])} / {ms(lat['p99'])} / {ms(lat['max'])} | {ms(latp['p50'])} / {ms(latp['p99'])} | "
        f"{ms(dl['completion_s']['p99'])} | {h.num(dl['per_s'])} | {lost} | "
        f"{h.num(row['worker_cpu_per_delivery_us'], 1)} | {mark}{row['server_cpu_s']:.1f} / {clients:.1f} + "
        f"{publisher:.1f} / {cpu['others']:.1f} over {row['wall_s']:.1f} s |"
    )


def best(rows: list[dict[str, Any]]) -> tuple[float | None, str, bool]:
    """(deliveries/s, text, whether it is an upper bound) of a ladder: below the first rate asked if none passed."""
    passed = [row for row in rows if verdict(row)[0]]
    if not rows:
        return None, "-", False
    if not passed:
        return rows[0]["deliveries_asked"], f"none passed (< {h.num(rows[0]['deliveries_asked'])})", True
    row = max(passed, key=lambda row: row["deliveries"]["per_s"] or 0)
    return (
        row["deliveries"]["per_s"],
        f"{h.num(row['deliveries']['per_s'])} ({row['rate_achieved']:.1f} events/s)",
        False,
    )


def render(report: dict[str, Any]) -> str:
    config, machine, targets = report["config"], report["machine"], report["targets"]
    names = [name for name in config["targets"] if "error" not in targets[name]]
    code = targets.get("livesite", {}).get("code", {})
    lines = [
        f"### Side by side with django-eventstream ({report['date']})",
        "",
        f"- Machine: {machine['nproc']} cores, {machine['mem_gib']} GiB, Linux {machine['kernel']}, Python "
        f"{machine['python']}; {report.get('redis', 'redis-server')}, one server for both targets.",
        f"- `uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`.",
        f"- livesite: {code.get('rev', '-')} (commit {str(code.get('commit', '-'))[:10]}).",
        f"- django-eventstream: {report.get('peer', {}).get('packages', '-')} in its own virtualenv, configured as "
        "its README says for several processes (`EVENTSTREAM_REDIS`), no event storage, no middleware.",
        f"- {config['workers']} Daphne workers per target; one load client process; latency steps "
        f"{config['latency_events']} events at {config['latency_rate']:g}/s; ladders at "
        f"{', '.join(f'{count:,}' for count in config['ladder_at']) or '-'} subscribers, {config['ladder_secs']:g} s "
        f"per step; publisher: {config['publish_concurrency']} keep-alive connections round-robin over the workers.",
    ]
    lines += [
        f"- **{LABELS[name]} failed**: {targets[name]['error']}" for name in config["targets"] if name not in names
    ]
    summaries = {name: idle_summary(targets[name]) for name in names}
    lines += ["", f"Idle streams (after connecting {config['subscribers'][0]:,}):", ""]
    lines += ["| measure | " + " | ".join(LABELS[name] for name in names) + " |", "| --- |" + " ---: |" * len(names)]
    cells = {
        "streams held": lambda c, s: (
            f"{c['held']:,} of {c['requested']:,}" + (f" (failed {c['failed']:,})" if c["failed"] else "")
        ),
        "connect rate; time to held p50 / p99": lambda c, s: (
            f"{h.num(c['rate_per_s'])}/s; "
            f"{ms(c['time_to_connected_s']['p50'])} / {ms(c['time_to_connected_s']['p99'])} ms"
        ),
        "worker CPU per stream opened": lambda c, s: f"{h.num(s['worker_cpu_per_connect_ms'], 2)} ms",
        "RSS per stream": lambda c, s: f"{h.num(s['rss_per_stream_kb'], 1)} KiB",
        "USS per stream": lambda c, s: f"{h.num(s['uss_per_stream_kb'], 1)} KiB",
        "streams per GiB (RSS)": lambda c, s: h.num(s["rss_per_gib"]),
        "fds per worker": lambda c, s: ", ".join(map(str, s["fds"])),
    }
    for label, cell in cells.items():
        lines.append(f"| {label} | " + " | ".join(cell(targets[n]["connect"], summaries[n]) for n in names) + " |")
    header = (
        "| target | subscribers | events/s reached of asked | POST sent -> received p50 / p99 / max (ms) | "
        "`published_at` -> received p50 / p99 (ms) | completion p99 (ms) | deliveries/s | lost | "
        "worker CPU per delivery (µs) | CPU s: server / client + publisher / other processes |"
    )
    separator = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    lines += ["", f"Broadcast latency at {config['latency_rate']:g} events/s:", "", header, separator]
    for index in range(len(config["subscribers"])):
        lines += [
            step_row(LABELS[n], targets[n]["latency"][index]) for n in names if index < len(targets[n]["latency"])
        ]
    for count in config["ladder_at"]:
        lines += ["", f"Rate ladder at {count:,} subscribers (pass: all accepted, nothing lost, p99 < 1 s; saturated: "]
        lines[-1] += "the publisher reached under 90 % of the rate asked):"
        lines += ["", header.replace("| CPU s:", "| pass | CPU s:"), separator[: -len(" --- |")] + " :-: | --- |"]
        for name in names:
            for row in targets[name]["ladders"].get(str(count), []):
                passed, saturated = verdict(row)
                mark = ("yes" if passed else "**no**") + (", saturated" if saturated else "") + " | "
                lines.append(step_row(LABELS[name], row, mark))
    if "livesite" in names and "eventstream" in names:
        ours, theirs = targets["livesite"], targets["eventstream"]
        lines += ["", "Ours / theirs (higher is better for streams per GiB and deliveries/s, lower for latency):", ""]
        lines += ["| measure | livesite | django-eventstream | ours / theirs |", "| --- | ---: | ---: | ---: |"]
        for kind in ("rss", "uss"):
            a, b = summaries["livesite"][f"{kind}_per_gib"], summaries["eventstream"][f"{kind}_per_gib"]
            lines.append(f"| streams per GiB ({kind.upper()}) | {h.num(a)} | {h.num(b)} | {ratio(a, b)} |")
        for count in config["ladder_at"]:
            (a, text_a, _), (b, text_b, bound) = (best(t["ladders"].get(str(count), [])) for t in (ours, theirs))
            lines.append(
                f"| deliveries/s with p99 < 1 s, {count:,} subscribers | {text_a} | {text_b} | "
                f"{'> ' if bound else ''}{ratio(a, b)} |"
            )
        # Steps in the same order for both: --subscribers, largest first (streams held may fall short of asked).
        for a, b, asked in zip(ours["latency"], theirs["latency"], config["subscribers"], strict=False):
            la, lb = a["deliveries"]["latency_from_send_s"], b["deliveries"]["latency_from_send_s"]
            lines.append(
                f"| broadcast latency to {asked:,}, p50 / p99 (ms) | {ms(la['p50'])} / {ms(la['p99'])} | "
                f"{ms(lb['p50'])} / {ms(lb['p99'])} | {ratio(la['p50'], lb['p50'])} / {ratio(la['p99'], lb['p99'])} |"
            )
    for name in names:
        for row in targets[name]["latency"]:
            for profile in row.get("profiles", []):
                text = profile.get("error") or h.render_profile(profile)
                lines += ["", f"py-spy {LABELS[name]} {profile['worker']} ({row['subscribers']:,} subscribers): {text}"]
        if problems := {worker: found for worker, found in targets[name].get("log_problems", {}).items() if found}:
            lines += ["", f"{LABELS[name]} worker log problems: {str(problems)[:1500]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return 0
    return h.run(SideBySide, args, render)


if __name__ == "__main__":
    sys.exit(main())
