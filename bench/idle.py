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
        args, report = self.args, self.report
        await self.start_site(args.workers)
        await self.warm_up(publishes=1, streams=True)
        await self.start_clients(
            self.spread(self.workers, args.connections, args.clients, args.sources),
            self.stream_request([args.topic]).encode(),
            concurrency=args.connect_concurrency,
            connect_timeout=args.connect_timeout,
        )
        await asyncio.sleep(args.settle)
        self.check_alive()
        samples = {"baseline": self.snapshot()}  # with the clients alive: PSS divides shared pages among users
        progress: list[dict[str, Any]] = []

        def log_progress() -> None:
            """Streams open per worker, from its fds (one per stream), every second."""
            fds = {w.name: h.open_fds(w.pid) - samples["baseline"][w.name]["fds"] for w in self.workers}
            progress.append({"t": round(time.monotonic() - started, 1), "streams_by_fds": fds})
            if len(progress) % 5 == 0:
                print(f"  {progress[-1]['t']:5.0f} s: ~{sum(fds.values()):,} streams open", file=sys.stderr)

        print(f"opening {args.connections:,} streams over {args.workers} workers ...", file=sys.stderr)
        started = time.monotonic()
        results = await self.connect(args.connect_timeout + args.connections / 50, log_progress)
        report["connect"] = self.connect_summary(results, args.connections)
        if not (held := report["connect"]["held"]):
            raise h.BenchError(f"no stream connected: {report['connect']['errors']}")
        samples["connected"] = self.snapshot()  # the connect phase's CPU ends here
        await asyncio.sleep(args.settle)
        self.check_alive()
        samples["after_connect"] = self.snapshot()
        stats_connected = await self.stats()

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
            start = self.snapshot()
            report["probe"] = {"sent_at": time.time()}
            event = {"topic": args.topic, "type": h.EVENT_TYPE, "data": {"seq": 0, "sent_at": time.time()}}
            await self.call(self.workers[0], "POST", "/api/publish", event, expect=202)
            expected = report["hold"]["open"]
            drain = await self.drain(lambda statuses: sum(s["received"] for s in statuses) >= expected, args.drain)
            end = self.snapshot()
            report["probe"] |= {"received_polled": drain["received"], "cpu": h.cpu_deltas(start, end)}
            report["probe"]["wall_s"] = end["bench"]["time"] - start["bench"]["time"]
        stats_end = await self.stats()
        self.finish()

        results = await self.ask_all(("stop",), 120)
        if not args.no_probe:
            reached = [result for result in results if result["counts"] and result["counts"][0]]
            sent = report["probe"]["sent_at"]
            report["probe"] |= {
                "received": sum(result["counts"][0] for result in reached),
                "expected": report["hold"]["open"],
                "first_s": min((array("d", r["first"])[0] - sent for r in reached), default=None),
                "complete_s": max((array("d", r["last"])[0] - sent for r in reached), default=None),
            }
        keys = ("max_rss_kb", "cpu_s", "comments", "open", "lost")
        report["clients"] = [{key: result[key] for key in keys} for result in results]
        report["samples"], report["progress"] = samples, progress
        report["worker_stats"] = {"after_connect": stats_connected, "end": stats_end}
        connected, hold_start, after_hold = samples["connected"], samples["hold_start"], samples["after_hold"]
        report["cpu"] = {
            "connect": h.cpu_deltas(samples["baseline"], connected),
            "connect_wall_s": connected["bench"]["time"] - samples["baseline"]["bench"]["time"],
            "hold": h.cpu_deltas(hold_start, after_hold),
            "hold_wall_s": after_hold["bench"]["time"] - hold_start["bench"]["time"],
        }
        phases = (samples["baseline"], samples["after_connect"], after_hold)
        rows = [h.memory_row(w.name, stats_connected[w.name]["connections"], *phases) for w in self.workers]
        total: dict[str, Any] = {"streams": sum(row["streams"] for row in rows)}
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
    ttc = h.pct(conn["time_to_connected_s"], lambda value: f"{h.ms(value)} ms")
    lines = [
        f"| streams held | {conn['held']:,} of {conn['requested']:,} ({args['workers']} workers, {args['clients']} "
        f"client process(es), {args['sources']} source address(es)); failed: {errors} |",
        f"| connect | {conn['wall_s']:.1f} s, {conn['rate_per_s'] or 0:,.0f} streams/s; time to `connected` {ttc} |",
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
        f"| CPU while connecting | {h.cpu_line(cpu['connect'], cpu['connect_wall_s'], cores)} |",
        f"| CPU while holding (idle: keep-alives, Daphne's checker) | "
        f"{h.cpu_line(cpu['hold'], cpu['hold_wall_s'], cores)} |",
    ]
    lines += [f"| CPU during the probe | {h.cpu_line(probe['cpu'], probe['wall_s'], cores)} |"] if probe else []
    lines.append(f"| load average (1/5/15 min) start -> end | {h.load_line(report)} |")
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}.",
        "",
        "| measure | value |",
        "| --- | --- |",
        *lines,
        "",
        "| worker | streams | RSS MiB before -> connected -> held | RSS/stream | PSS MiB before -> connected | "
        "PSS/stream | USS/stream | RSS all-in/stream | fds before -> connected -> held | CPU s connect / hold |",
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in [*report["memory"]["workers"], {"name": "all", **total, "fds": []}]:
        cpu_s = f"{cpu['connect'].get(row['name'], 0):.1f} / {cpu['hold'].get(row['name'], 0):.1f}"
        lines.append(
            f"| {row['name']} | {row['streams']:,} | {' -> '.join(map(h.mib, row['rss_kb']))} | "
            f"{h.kib(row['rss_per_stream_kb'])} | {' -> '.join(map(h.mib, row['pss_kb'][:2]))} | "
            f"{h.kib(row['pss_per_stream_kb'])} | {h.kib(row['uss_per_stream_kb'])} | "
            f"{h.kib(row['rss_all_in_per_stream_kb'])} | {' -> '.join(map(str, row['fds']))} | "
            f"{cpu_s if row['fds'] else ''} |"
        )
    lines += [
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
            f"| {name} | {row['streams']:,} | {' -> '.join(map(h.mib, row['rss_kb'][:2]))} | "
            f"{h.kib(row['rss_per_stream_kb'])} | {h.kib(row['uss_per_stream_kb'])} | {h.mib(extra['max_rss_kb'])} | "
            f"{cpu['connect'].get(name, 0):.1f} / {cpu['hold'].get(name, 0):.1f} / {extra['cpu_s']:.1f} | "
            f"{extra['comments']:,} |"
        )
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Idle, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
