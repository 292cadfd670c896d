"""Idle connections held: N SSE streams over W workers on Redis; how many stay open and what each one costs.

    .venv/bin/python -m bench.idle --connections 100000 --workers 6
    .venv/bin/python -m bench.idle --connections 6000 --workers 6         # a warm-up size

Its own redis-server and W workers (bench/harness.py); N streams (`GET /realtime/connect?topics=bench.idle`)
round-robin over the workers from C client processes bound to K source addresses 127.0.0.x. Measures:
- connecting: streams held, streams/s, time to `connected`, CPU of workers, redis and clients;
- memory: each worker's RSS, PSS, USS and fds before the first stream and after the last, per stream as the
  increase (marginal) and as the whole process divided by its streams (all-in); the same for the clients;
- holding: after --hold seconds (past a keep-alive, so every stream was written to), how many are still open,
  and the CPU an idle worker spends (keep-alives, Daphne's checker);
- a probe: one event published to the streams' topic must reach every stream held.
A worker or client process holds at most about 19,900 streams (20,000 open files); the defaults split the load.
"""

import argparse
import asyncio
import sys
import time
from array import array
from typing import Any

from bench import harness as h


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
    h.add_common_options(parser, "idle-w<W>-c<N>", 540.0)
    args = parser.parse_args(argv)
    if args.workers < 1 or args.connections < 1:
        parser.error("--workers and --connections must be positive")
    h.streams_and_sources(parser, args, args.connections, args.workers)
    args.name = args.name or f"idle-w{args.workers}-c{args.connections}"
    return args


class Idle(h.Harness):
    async def main(self) -> dict[str, Any]:
        args, report, progress = self.args, self.report, []
        await self.start_site(args.workers)
        await self.warm_up(publishes=1, streams=True)

        def log_progress() -> None:
            """Streams open per worker, from its fds (one per stream), every second."""
            fds = {w.name: h.open_fds(w.pid) - before[w.name]["fds"] for w in self.workers}
            progress.append({"t": round(time.monotonic() - started, 1), "streams_by_fds": fds})
            if len(progress) % 5 == 0:
                print(f"  {progress[-1]['t']:5.0f} s: ~{sum(fds.values()):,} streams open", file=sys.stderr)

        started, before = time.monotonic(), self.snapshot()
        shares = self.spread(self.workers, args.connections, args.clients, args.sources)
        config = {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        report["connect"], samples = await self.open_streams(
            shares, self.stream_request([args.topic]), log_progress, **config
        )
        stats_connected, held = await self.stats(), report["connect"]["held"]
        print(f"holding {held:,} streams for {args.hold:.0f} s ...", file=sys.stderr)
        samples["hold_start"] = self.snapshot()
        await asyncio.sleep(self.remaining(args.hold))
        samples["after_hold"] = self.snapshot()
        status = await self.ask_all(("status",), 60)
        report["hold"] = {"secs": args.hold, **{key: sum(s[key] for s in status) for key in ("open", "resets")}}
        report["hold"]["closed"] = sum(s["lost"] for s in status)
        if not args.no_probe:
            print("probe: one event to every stream ...", file=sys.stderr)
            await self.ask_all(("expect", 1), 30)
            start, report["probe"] = self.snapshot(), {"sent_at": time.time()}
            event = {"topic": args.topic, "type": h.EVENT_TYPE, "data": {"seq": 0, "sent_at": time.time()}}
            await self.call(self.workers[0], "POST", "/api/publish", event, expect=202)
            expected = report["hold"]["open"]
            drain = await self.drain(lambda statuses: sum(s["received"] for s in statuses) >= expected, args.drain)
            end = self.snapshot()
            report["probe"] |= {"received_polled": drain["received"], "cpu": h.cpu_deltas(start, end)}
        stats_end = await self.stats()
        self.finish()
        results = await self.ask_all(("stop",), 120)
        if not args.no_probe:
            reached, sent = [r for r in results if r["counts"] and r["counts"][0]], report["probe"]["sent_at"]
            report["probe"] |= {"received": sum(r["counts"][0] for r in reached), "expected": report["hold"]["open"]}
            report["probe"]["first_s"] = min((array("d", r["first"])[0] - sent for r in reached), default=None)
            report["probe"]["complete_s"] = max((array("d", r["last"])[0] - sent for r in reached), default=None)
        keys = ("max_rss_kb", "cpu_s", "comments", "open", "lost")
        report["clients"] = [{key: result[key] for key in keys} for result in results]
        report |= {"samples": samples, "progress": progress}
        report["worker_stats"] = {"after_connect": stats_connected, "end": stats_end}
        baseline, connected, hold_start, after_hold = (
            samples[k] for k in ("baseline", "connected", "hold_start", "after_hold")
        )
        report["cpu"] = {"connect": h.cpu_deltas(baseline, connected), "hold": h.cpu_deltas(hold_start, after_hold)}
        phases = (baseline, samples["after_connect"], after_hold)
        rows = [h.memory_row(w.name, stats_connected[w.name]["connections"], *phases) for w in self.workers]
        total: dict[str, Any] = {"name": "all", "streams": sum(row["streams"] for row in rows), "fds": []}
        for kind in ("rss", "pss", "uss"):
            values = total[f"{kind}_kb"] = [sum(row[f"{kind}_kb"][phase] for row in rows) for phase in range(3)]
            total[f"{kind}_per_stream_kb"] = (values[1] - values[0]) / total["streams"] if total["streams"] else None
            total[f"{kind}_all_in_per_stream_kb"] = values[1] / total["streams"] if total["streams"] else None
        held_per_client = zip(self.clients, report["connect"]["held_per_client"], strict=True)
        clients = [h.memory_row(client.name, streams, *phases) for client, streams in held_per_client]
        report["memory"] = {"workers": rows, "total": total, "clients": clients}
        return report


def render(report: dict[str, Any]) -> str:
    args, cores = report["config"], report["machine"]["nproc"]
    conn, hold, cpu, total = report["connect"], report["hold"], report["cpu"], report["memory"]["total"]
    errors = ", ".join(f"{name} x{count}" for name, count in conn["errors"].items()) or "none"
    rss_kb, probe = total["rss_per_stream_kb"], report.get("probe")
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| streams held | {conn['held']:,} of {conn['requested']:,} ({args['workers']} workers, {args['clients']} "
        f"client process(es), {args['sources']} source address(es)); failed: {errors} |",
        f"| connect | {conn['wall_s']:.1f} s, {conn['rate_per_s'] or 0:,.0f} streams/s; time to `connected` "
        + h.pct(conn["time_to_connected_s"], lambda value: f"{h.ms(value)} ms")
        + " |",
        f"| still open after holding {hold['secs']:.0f} s | {hold['open']:,} (closed {hold['closed']:,}, resets "
        f"{hold['resets']}) |",
    ]
    if probe:
        lines.append(
            f"| probe: one event to every stream | reached {probe['received']:,} of {probe['expected']:,}; first "
            f"after {h.ms(probe['first_s'])} ms, last after {h.ms(probe['complete_s'])} ms |"
        )
    lines += [
        f"| worker memory per stream (all workers, increase over the baseline) | RSS {h.kib(rss_kb)} "
        f"({(rss_kb or 0) * 1.024:.1f} kB), PSS {h.kib(total['pss_per_stream_kb'])}, "
        f"USS {h.kib(total['uss_per_stream_kb'])} |",
        f"| worker memory per stream, all-in (whole RSS / streams) | {h.kib(total['rss_all_in_per_stream_kb'])} "
        f"({h.mib(total['rss_kb'][1])} MiB RSS for {total['streams']:,} streams) |",
        f"| CPU while connecting | {h.cpu_line(cpu['connect'], cores)} |",
        f"| CPU while holding (idle: keep-alives, Daphne's checker) | {h.cpu_line(cpu['hold'], cores)} |",
    ]
    lines += [f"| CPU during the probe | {h.cpu_line(probe['cpu'], cores)} |"] if probe else []
    lines += [f"| load average (1/5/15 min) start -> end | {h.load_line(report)} |", ""]
    clients = dict(zip((row["name"] for row in report["memory"]["clients"]), report["clients"], strict=True))

    def cpu_cell(row: dict[str, Any]) -> str:
        values = [cpu[phase].get(row["name"], 0) for phase in ("connect", "hold")]
        extra = clients.get(row["name"])
        return " / ".join(f"{v:.1f}" for v in values + ([extra["cpu_s"]] if extra else [])) if row["fds"] else ""

    extra = {"CPU s connect / hold (/ total)": cpu_cell}
    lines += h.memory_table([*report["memory"]["workers"], total], "before -> connected -> held", extra)
    lines += ["", "Load client (not part of the server's memory; keep-alive comments received, max RSS):", ""]
    extra |= {"comments": lambda row: f"{clients[row['name']]['comments']:,}"}
    extra |= {"max RSS MiB": lambda row: h.mib(clients[row["name"]]["max_rss_kb"])}
    lines += h.memory_table(report["memory"]["clients"], "before -> connected -> held", extra)
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Idle, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
