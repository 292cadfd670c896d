"""Cross-data-centre benchmark: publish in DC-1, receive in DC-2; the same-DC latency in DC-1 beside it.

    .venv/bin/python -m bench.crossdc --subscribers 1000 --events 200 --rate 10

Two data centres on this machine, each with its own redis-server and worker(s) (env DATA_CENTER, REALTIME_PEERS
naming the other one's first worker, a shared random REALTIME_PEER_SECRET); one SQLite file holds the staff token.
N streams subscribe to --topic in DC-2 and --local-subscribers in DC-1 (one client process each). M events are
published in DC-1 at --rate per second, each with its send time; DC-1 delivers them and forwards them to DC-2
(realtime/peers.py). Reports per data centre: latency from the POST's send time and from `published_at` (set in
DC-1) to receipt; per event, DC-2's first receipt minus DC-1's; losses, duplicates, closed streams; the `peers`
counters of every worker's /realtime/stats; peer batches received (access logs); the CPU of every process.
"""

import argparse
import asyncio
import json
import sys
import time
from array import array
from typing import Any

from bench import harness as h

DCS = ("dc1", "dc2")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=1000, help="streams in DC-2 (default 1000)")
    parser.add_argument("--local-subscribers", type=int, default=1000, help="streams in DC-1 (default 1000)")
    parser.add_argument("--workers-per-dc", type=int, default=1, help="Daphne workers per data centre (default 1)")
    parser.add_argument("--events", type=int, default=200, help="events published in DC-1 (default 200)")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second (default 10)")
    parser.add_argument("--topic", default="bench.crossdc")
    parser.add_argument("--publish-concurrency", type=int, default=4, help="keep-alive publisher connections")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    parser.add_argument("--drain", type=float, default=20.0, help="max seconds to wait for deliveries after the last")
    h.add_common_options(parser, "crossdc-n<N>-r<rate>", 300.0)
    args = parser.parse_args(argv)
    if min(args.subscribers, args.workers_per_dc, args.events, args.publish_concurrency) < 1 or args.rate <= 0:
        parser.error("--subscribers, --workers-per-dc, --events, --publish-concurrency and --rate must be positive")
    if args.local_subscribers < 0:
        parser.error("--local-subscribers must be 0 or more")
    args.name = args.name or f"crossdc-n{args.subscribers}-r{args.rate:g}"
    return args


class CrossDC(h.Harness):
    def in_dc(self, dc: str) -> list[h.Managed]:
        return [worker for worker in self.workers if worker.name.startswith(dc)]

    def peer_batches(self) -> dict[str, int]:
        """Peer batches each worker has received so far: `POST /realtime/peer/events` in its Daphne access log."""
        return {
            w.name: w.log_path.read_text(errors="replace").count('"POST /realtime/peer/events" 200')
            for w in self.workers
        }

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        ports = {dc: [h.devredis.free_port() for _ in range(args.workers_per_dc)] for dc in DCS}
        envs = {}
        for dc in DCS:
            # The peer's first worker stands for the peer data centre (its load balancer, in production).
            peers = ",".join(f"{other}=http://127.0.0.1:{ports[other][0]}" for other in DCS if other != dc)
            peer_env = {"DATA_CENTER": dc, "REALTIME_PEERS": peers, "REALTIME_PEER_SECRET": self.secret}
            envs[dc] = self.site_env(self.start_redis(f"{dc}-redis"), **peer_env)
        await self.prepare_site(envs["dc1"])
        for dc in DCS:
            self.start_workers(
                args.workers_per_dc, envs[dc], names=[f"{dc}-w{i}" for i in range(args.workers_per_dc)], ports=ports[dc]
            )
        await self.warm_up()  # starts the workers, their peer links and httpx clients

        wanted = {"dc1": args.local_subscribers, "dc2": args.subscribers}
        dcs = [dc for dc in DCS if wanted[dc]]
        shares = [self.spread(self.in_dc(dc), wanted[dc], 1, 1)[0] for dc in dcs]
        request = self.stream_request([args.topic])
        await self.start_clients(shares, request, names=[f"client-{dc}" for dc in dcs], concurrency=100 * len(dcs))
        results = await self.connect(30 + max(wanted.values()) / 50)
        report["connect"] = {
            dc: self.connect_summary([result], wanted[dc]) for dc, result in zip(dcs, results, strict=True)
        }
        for dc in dcs:
            if not report["connect"][dc]["held"]:
                raise h.BenchError(f"no stream connected in {dc}: {report['connect'][dc]['errors']}")
        await asyncio.sleep(args.settle)
        self.check_alive()
        await self.ask_all(("expect", args.events), 30)
        stats_before, batches_before, before = await self.stats(), self.peer_batches(), self.snapshot()

        print(f"publishing {args.events} events in dc1 at {args.rate}/s ...", file=sys.stderr)

        async def send(seq: int, connection: h.HttpConnection) -> int:
            event = {"topic": args.topic, "type": h.EVENT_TYPE, "data": {"seq": seq, "sent_at": time.time()}}
            return (await connection.request("POST", "/api/publish", event, timeout=10))[0]

        dc1 = self.in_dc("dc1")
        connections = [self.http(dc1[i % len(dc1)]) for i in range(args.publish_concurrency)]
        report["publish"] = await self.send_paced(args.events, args.rate, connections, send)
        held = [report["connect"][dc]["held"] for dc in dcs]
        expected = [n * report["publish"]["accepted"] for n in held]
        done = lambda statuses: all(s["received"] >= n for s, n in zip(statuses, expected, strict=True))  # noqa: E731
        report["drain"] = await self.drain(done, args.drain)
        after, stats_after, batches_after = self.snapshot(), await self.stats(), self.peer_batches()
        report["peer_batches_received"] = {name: batches_after[name] - batches_before[name] for name in batches_after}
        self.finish()
        results = await self.ask_all(("stop",), 60)
        report["deliveries"] = {
            dc: h.deliveries([result], report["publish"], n, args.events)
            for dc, result, n in zip(dcs, results, held, strict=True)
        }
        if len(results) == 2:
            firsts = zip(array("d", results[0]["first"]), array("d", results[1]["first"]), strict=True)
            report["dc2_minus_dc1_first_per_event_s"] = [b - a if a and b else None for a, b in firsts]
            values = report["dc2_minus_dc1_first_per_event_s"]
            report["dc2_minus_dc1_first_s"] = h.percentiles(value for value in values if value is not None)
        report["cpu"] = h.cpu_deltas(before, after)
        report["peers"] = {
            name: {"before": stats_before[name].get("peers"), "after": stats_after[name].get("peers")}
            for name in stats_after
        }
        report["worker_stats"] = stats_after
        keys = ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames")
        report["clients"] = {dc: {k: result[k] for k in keys} for dc, result in zip(dcs, results, strict=True)}
        report["exit_status"] = 2 if any(d["lost"] or d["duplicates"] for d in report["deliveries"].values()) else 0
        return report


def render(report: dict[str, Any]) -> str:
    config, pub = report["config"], report["publish"]
    lines = [
        f"### {config['name']} ({report['stamp']}, {config['workers_per_dc']} worker(s) per data centre)",
        "",
        "| measure | value |",
        "| --- | --- |",
    ]
    for dc, conn in report["connect"].items():
        where = "DC-2 (remote)" if dc == "dc2" else "DC-1 (local)"
        lines.append(
            f"| streams in {where} | {conn['held']:,} of {conn['requested']:,} on `{config['topic']}` "
            f"(errors: {conn['errors'] or 'none'}) |"
        )
    lines.append(
        f"| published in DC-1 | {pub['accepted']} of {pub['events']} accepted ({pub['statuses']}), "
        f"{pub['rate_achieved'] or 0:.1f} events/s (target {pub['rate_target']:g}); "
        f"POST {h.pct(pub['post_latency_s'])} ms |"
    )
    for dc in [dc for dc in ("dc2", "dc1") if dc in report["deliveries"]]:
        d = report["deliveries"][dc]
        label = "cross-DC (DC-1 -> DC-2)" if dc == "dc2" else "same DC (DC-1)"
        lines += [
            f"| {label}: POST sent -> received (ms) | {h.pct(d['latency_from_send_s'])} |",
            f"| {label}: `published_at` -> received (ms) | {h.pct(d['latency_from_published_at_s'])} |",
            f"| {label}: POST sent -> last stream (ms) | {h.pct(d['completion_s'])} "
            f"({d['events_complete']} of {pub['events']} events complete) |",
            f"| {label}: deliveries | {d['received']:,} of {d['expected']:,}: lost {d['lost']}, duplicates "
            f"{d['duplicates']}, streams closed {d['streams_lost']}, resets {d['resets']} |",
        ]
    if "dc2_minus_dc1_first_s" in report:
        lines.append(
            f"| per event: first receipt in DC-2 - first in DC-1 (ms) | {h.pct(report['dc2_minus_dc1_first_s'])} |"
        )
    forwarded = {}
    for name, peers in report["peers"].items():
        after, before = peers["after"] or {}, peers["before"] or {}
        for peer, counters in after.items():
            delta = {k: v - (before.get(peer) or {}).get(k, 0) for k, v in counters.items() if k != "queued"}
            forwarded[peer] = forwarded.get(peer, 0) + delta.get("forwarded", 0)
            lines.append(
                f"| `peers` of {name} -> {peer} | after: {json.dumps(counters)}; during the run: "
                f"{', '.join(f'{k} {v}' for k, v in delta.items())} |"
            )
    for name, batches in report.get("peer_batches_received", {}).items():
        if batches:
            per_batch = forwarded.get(name.split("-")[0], 0) / batches
            lines.append(
                f"| peer batches received by {name} (its access log) | {batches:,} during the run "
                f"({per_batch:.2f} events per batch) |"
            )
    lines += [
        f"| CPU while publishing | {h.cpu_line(report['cpu'], report['machine']['nproc'])} |",
        f"| load average (1/5/15 min) start -> end | {h.load_line(report)} |",
    ]
    if report.get("log_problems"):
        lines += ["", f"log problems: {json.dumps(report['log_problems'])[:3000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(CrossDC, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
