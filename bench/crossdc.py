"""Cross-data-centre benchmark: publish in DC-1, receive in DC-2; the same-DC latency in DC-1 beside it.

    .venv/bin/python -m bench.crossdc --subscribers 1000 --events 200 --rate 10

Two data centres on this machine, each with its own redis-server and its own Daphne worker(s) (`python -m
livesite.serve`, env DATA_CENTER, REALTIME_PEERS naming the other one's first worker, a shared random
REALTIME_PEER_SECRET), all on free loopback ports. Both share one temp SQLite file, which only holds the staff
user whose DRF token publishes and reads `/realtime/stats`. N streams (bench/loadclient.py, one client process)
subscribe to --topic in DC-2 and --local-subscribers streams (another client process) in DC-1. M events are
published through `POST /api/publish` in DC-1 at --rate per second, each carrying its send time; DC-1 delivers
them locally and forwards them to DC-2 (realtime/peers.py), which delivers them to its own streams.

Reports, per data centre: latency from the POST's send time and from the event's `published_at` stamp (set in
DC-1, carried across) to receipt, p50/p90/p99/max; per event, DC-2's first receipt minus DC-1's; losses,
duplicates, closed streams; the `peers` counters of every worker's `/realtime/stats` (before and after); and the
CPU of every process. Prints Markdown tables and writes JSON to bench/results/<name>-<UTC timestamp>.json. Every
process it started is stopped by PID, also on Ctrl-C, errors and the --timeout.
"""

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.httpmini import HttpConnection, HttpError
from bench.loadclient import ClientProcess

RESULTS = Path(__file__).resolve().parent / "results"
EVENT_TYPE = "bench.tick"  # what bench/loadclient.py times: data {"seq", "sent_at"}
DCS = ("dc1", "dc2")


class BenchError(Exception):
    pass


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
    parser.add_argument("--timeout", type=float, default=300.0, help="bound of the whole run, seconds")
    parser.add_argument("--rev", default="", help="run the site as committed at this revision (default: work tree)")
    parser.add_argument("--name", default="", help="results name (default crossdc-n<N>-r<rate>)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs)")
    args = parser.parse_args(argv)
    if min(args.subscribers, args.workers_per_dc, args.events, args.publish_concurrency) < 1 or args.rate <= 0:
        parser.error("--subscribers, --workers-per-dc, --events, --publish-concurrency and --rate must be positive")
    if args.local_subscribers < 0:
        parser.error("--local-subscribers must be 0 or more")
    args.name = args.name or f"crossdc-n{args.subscribers}-r{args.rate:g}"
    return args


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def pct_line(values: dict[str, float | None]) -> str:
    return f"p50 {ms(values['p50'])}, p90 {ms(values['p90'])}, p99 {ms(values['p99'])}, max {ms(values['max'])}"


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.deadline = time.monotonic() + args.timeout
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-crossdc-"))
        self.redis: dict[str, procs.Managed] = {}
        self.workers: dict[str, list[procs.Managed]] = {dc: [] for dc in DCS}
        self.clients: dict[str, ClientProcess] = {}
        self.token = ""
        self.report: dict[str, Any] = {}

    def remaining(self, cap: float | None = None) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BenchError(f"the run passed its --timeout of {self.args.timeout:.0f}s")
        return left if cap is None else min(left, cap)

    def managed(self) -> list[procs.Managed]:
        return [*self.workers["dc1"], *self.workers["dc2"], *self.redis.values()]

    def check_alive(self) -> None:
        for managed in self.managed():
            if managed.process.poll() is not None:
                problems = "\n".join(managed.log_problems()[-5:])
                raise BenchError(f"{managed.name} exited with {managed.process.returncode}\n{problems}")

    def snapshot(self) -> dict[str, Any]:
        pids = {managed.name: managed.pid for managed in self.managed()}
        pids.update({f"client-{dc}": client.pid for dc, client in self.clients.items()})
        pids["publisher"] = os.getpid()
        readings: dict[str, Any] = {name: procs.sample(pid)["cpu_s"] for name, pid in pids.items()}
        readings["machine"] = procs.machine_cpu_seconds()
        readings["time"] = time.time()
        return readings

    def peer_batches(self) -> dict[str, int]:
        """Peer batches each worker has received so far: its Daphne access log's `POST /realtime/peer/events`."""
        result = {}
        for dc in DCS:
            for worker in self.workers[dc]:
                try:
                    text = worker.log_path.read_text(errors="replace") if worker.log_path else ""
                except OSError:
                    text = ""
                result[worker.name] = text.count('"POST /realtime/peer/events" 200')
        return result

    def connection(self, worker: procs.Managed) -> HttpConnection:
        return HttpConnection("127.0.0.1", worker.port, headers={"Authorization": f"Token {self.token}"})

    # -- servers --------------------------------------------------------------------------------

    async def start_servers(self) -> None:
        args = self.args
        root = procs.ROOT
        if args.rev:
            root = self.tmp / "src"
            self.report["code"] = {"rev": args.rev, "commit": procs.export_tree(args.rev, root)}
        else:
            self.report["code"] = {"rev": "working tree", "commit": self.report["machine"]["git_commit"]}
        secret = secrets.token_hex(16)
        ports = {dc: [procs.free_port() for _ in range(args.workers_per_dc)] for dc in DCS}
        envs = {}
        for dc in DCS:
            (self.tmp / dc).mkdir()
            self.redis[dc] = procs.start_redis(self.tmp / dc, self.deadline)
            self.redis[dc].name = f"{dc}-redis"
            # The peer's first worker stands for the peer data centre (its load balancer, in production).
            peers = ",".join(f"{other}=http://127.0.0.1:{ports[other][0]}" for other in DCS if other != dc)
            envs[dc] = procs.site_env(
                self.tmp,
                f"redis://127.0.0.1:{self.redis[dc].port}/0",
                root,
                DATA_CENTER=dc,
                REALTIME_PEERS=peers,
                REALTIME_PEER_SECRET=secret,
            )
        staff = await asyncio.to_thread(procs.prepare_site, envs["dc1"], root, self.deadline)
        self.token = staff["token"]
        for dc in DCS:
            self.workers[dc] = procs.start_workers(
                args.workers_per_dc, envs[dc], self.tmp, root, self.deadline, ports=ports[dc], prefix=f"{dc}-w"
            )

    async def stats(self) -> dict[str, dict[str, Any]]:
        result = {}
        for dc in DCS:
            for worker in self.workers[dc]:
                connection = self.connection(worker)
                try:
                    status, body = await connection.request("GET", "/realtime/stats", timeout=self.remaining(10))
                finally:
                    connection.close()
                if status != 200:
                    raise BenchError(f"GET /realtime/stats on {worker.name}: {status} {body!r}")
                result[worker.name] = body
        return result

    async def warm_up(self) -> None:
        """Publish a few events in each data centre (starts the workers, their peer links and httpx clients)."""
        for dc in DCS:
            for worker in self.workers[dc]:
                connection = self.connection(worker)
                try:
                    for _ in range(3):
                        event = {"topic": "bench.warmup", "type": EVENT_TYPE, "data": {"seq": -1, "sent_at": 0}}
                        status, body = await connection.request(
                            "POST", "/api/publish", event, timeout=self.remaining(20)
                        )
                        if status != 202:
                            raise BenchError(f"warm-up publish on {worker.name}: {status} {body!r}")
                finally:
                    connection.close()
        await asyncio.sleep(0.5)
        await self.stats()

    # -- clients --------------------------------------------------------------------------------

    async def start_clients(self) -> dict[str, Any]:
        args = self.args
        request = (
            f"GET /realtime/connect?topics={args.topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        ).encode()
        wanted = {"dc1": args.local_subscribers, "dc2": args.subscribers}
        for dc in DCS:
            if not wanted[dc]:
                continue
            workers = self.workers[dc]
            config = {
                "targets": [(workers[i % len(workers)].port, "127.0.0.1") for i in range(wanted[dc])],
                "request": request,
                "concurrency": 100,
                "connect_timeout": 30.0,
                "deadline": time.time() + self.remaining(),
            }
            self.clients[dc] = ClientProcess(config, name=f"client-{dc}")
        for client in self.clients.values():
            reply = await client.recv(self.remaining(60))
            if reply[0] != "ready":
                raise BenchError(f"{client.name} said {reply[0]!r}")
        result = {}
        for dc, client in self.clients.items():
            reply = (await client.ask(("connect",), self.remaining(30 + wanted[dc] / 50)))[1]
            result[dc] = {
                "requested": wanted[dc],
                "held": reply["held"],
                "errors": reply["errors"],
                "wall_s": reply["ended"] - reply["started"],
                "time_to_connected_s": procs.percentiles(array("d", reply["connect_secs"])),
            }
            if not reply["held"]:
                raise BenchError(f"no stream connected in {dc}: {reply['errors']}")
        return result

    # -- publishing -----------------------------------------------------------------------------

    async def publish(self) -> dict[str, Any]:
        """Publish --events events in DC-1 at --rate, round-robin over its workers; data {"seq", "sent_at"}."""
        args = self.args
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        workers = self.workers["dc1"]
        connections = [self.connection(workers[i % len(workers)]) for i in range(args.publish_concurrency)]
        for connection in connections:
            pool.put_nowait(connection)
        sent_at = [0.0] * args.events
        post_s = [0.0] * args.events
        statuses: Counter[str] = Counter()

        async def one(seq: int, connection: HttpConnection) -> None:
            sent_at[seq] = now = time.time()
            event = {"topic": args.topic, "type": EVENT_TYPE, "data": {"seq": seq, "sent_at": now}}
            try:
                status, _ = await connection.request("POST", "/api/publish", event, timeout=10)
                statuses[str(status)] += 1
            except (HttpError, OSError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1
            finally:
                post_s[seq] = time.time() - now
                pool.put_nowait(connection)

        tasks = []
        start = loop.time() + 0.05
        try:
            for seq in range(args.events):
                delay = start + seq / args.rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(min(delay, self.remaining()))
                connection = await asyncio.wait_for(pool.get(), self.remaining(30))
                tasks.append(asyncio.create_task(one(seq, connection)))
            await asyncio.wait_for(asyncio.gather(*tasks), self.remaining(30))
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                connection.close()
        span = max(sent_at) - min(sent_at)
        return {
            "events": args.events,
            "rate_target": args.rate,
            "rate_achieved": (args.events - 1) / span if span > 0 else None,
            "statuses": dict(statuses),
            "accepted": statuses.get("202", 0),
            "post_latency_s": procs.percentiles(post_s),
            "sent_at": sent_at,
        }

    async def drain(self, expected: dict[str, int]) -> dict[str, Any]:
        limit = time.monotonic() + self.args.drain
        started = time.monotonic()
        while True:
            received = {
                dc: (await client.ask(("status",), self.remaining(30)))[1]["received"]
                for dc, client in self.clients.items()
            }
            complete = all(received[dc] >= expected[dc] for dc in received)
            if complete or time.monotonic() > limit:
                return {"received": received, "complete": complete, "waited_s": time.monotonic() - started}
            await asyncio.sleep(0.2)

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
        report["connect"] = await self.start_clients()
        await asyncio.sleep(args.settle)
        self.check_alive()
        for client in self.clients.values():
            await client.ask(("expect", args.events), self.remaining(30))
        stats_before = await self.stats()
        batches_before = self.peer_batches()
        before = self.snapshot()
        print(f"publishing {args.events} events in dc1 at {args.rate}/s ...", file=sys.stderr)
        report["publish"] = await self.publish()
        held = {dc: report["connect"][dc]["held"] for dc in self.clients}
        expected = {dc: held[dc] * report["publish"]["accepted"] for dc in held}
        report["drain"] = await self.drain(expected)
        after = self.snapshot()
        stats_after = await self.stats()
        batches_after = self.peer_batches()
        report["peer_batches_received"] = {name: batches_after[name] - batches_before[name] for name in batches_after}
        report["loadavg_end"] = os.getloadavg()
        results = {dc: (await client.ask(("stop",), self.remaining(60)))[1] for dc, client in self.clients.items()}
        report["deliveries"] = {dc: deliveries(results[dc], report["publish"], held[dc]) for dc in results}
        if len(results) == 2:
            firsts = zip(array("d", results["dc1"]["first"]), array("d", results["dc2"]["first"]), strict=True)
            report["dc2_minus_dc1_first_per_event_s"] = [b - a if a and b else None for a, b in firsts]
            report["dc2_minus_dc1_first_s"] = procs.percentiles(
                [value for value in report["dc2_minus_dc1_first_per_event_s"] if value is not None]
            )
        report["cpu"] = cpu(before, after)
        report["peers"] = {
            name: {"before": stats_before[name].get("peers"), "after": stats_after[name].get("peers")}
            for name in stats_after
        }
        report["worker_stats"] = stats_after
        report["clients"] = {
            dc: {k: result[k] for k in ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames")}
            for dc, result in results.items()
        }
        report["log_problems"] = {m.name: m.log_problems()[-20:] for m in self.managed() if m.log_problems()}
        return report

    def cleanup(self) -> None:
        """Stop everything this run started, by PID: client processes, workers, redis servers."""
        for client in self.clients.values():
            client.stop()
        for managed in self.managed():
            with contextlib.suppress(Exception):
                managed.stop()
        if self.args.keep_tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def deliveries(result: dict[str, Any], published: dict[str, Any], held: int) -> dict[str, Any]:
    counts = result["counts"]
    accepted = published["accepted"]
    received = sum(counts)
    last = array("d", result["last"])
    sent_at = published["sent_at"]
    complete = [seq for seq, count in enumerate(counts) if count == held]
    return {
        "held": held,
        "expected": held * accepted,
        "received": received,
        "lost": held * accepted - received,
        "duplicates": result["duplicates"],
        "unknown": result["unknown"],
        "streams_closed": result["lost"],
        "resets": result["resets"],
        "events_complete": len(complete),
        "latency_from_send_s": procs.percentiles(array("d", result["lat_sent"])),
        "latency_from_published_at_s": procs.percentiles(array("d", result["lat_published"])),
        "completion_s": procs.percentiles([last[seq] - sent_at[seq] for seq in complete]),
        "first_receipt_per_event_s": [
            first - sent_at[seq] if first else None for seq, first in enumerate(array("d", result["first"]))
        ],
        "completion_per_event_s": [last[seq] - sent_at[seq] if counts[seq] else None for seq in range(len(counts))],
    }


def cpu(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    names = [name for name in after if name not in ("machine", "time") and name in before]
    ours = {name: round(after[name] - before[name], 3) for name in names}
    return {
        "wall_s": round(after["time"] - before["time"], 3),
        "per_process": ours,
        "server_s": round(sum(v for k, v in ours.items() if k.startswith("dc")), 3),
        "client_s": round(sum(v for k, v in ours.items() if k.startswith(("client", "publisher"))), 3),
        "others_s": round(max(0.0, after["machine"] - before["machine"] - sum(ours.values())), 3),
    }


def render(report: dict[str, Any]) -> str:
    config, pub, cpu_ = report["config"], report["publish"], report["cpu"]
    cores = report["machine"]["nproc"]
    rate = f"{pub['rate_achieved']:.1f}" if pub["rate_achieved"] else "-"
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
        f"| published in DC-1 | {pub['accepted']} of {pub['events']} accepted ({pub['statuses']}), {rate} events/s "
        f"(target {pub['rate_target']:g}); POST {pct_line(pub['post_latency_s'])} ms |"
    )
    order = [dc for dc in ("dc2", "dc1") if dc in report["deliveries"]]
    for dc in order:
        d = report["deliveries"][dc]
        label = "cross-DC (DC-1 -> DC-2)" if dc == "dc2" else "same DC (DC-1)"
        lines += [
            f"| {label}: POST sent -> received (ms) | {pct_line(d['latency_from_send_s'])} |",
            f"| {label}: `published_at` -> received (ms) | {pct_line(d['latency_from_published_at_s'])} |",
            f"| {label}: POST sent -> last stream (ms) | {pct_line(d['completion_s'])} "
            f"({d['events_complete']} of {pub['events']} events complete) |",
            f"| {label}: deliveries | {d['received']:,} of {d['expected']:,}: lost {d['lost']}, duplicates "
            f"{d['duplicates']}, streams closed {d['streams_closed']}, resets {d['resets']} |",
        ]
    if "dc2_minus_dc1_first_s" in report:
        lines.append(
            f"| per event: first receipt in DC-2 - first in DC-1 (ms) | {pct_line(report['dc2_minus_dc1_first_s'])} |"
        )
    for name, peers in report["peers"].items():
        after = peers["after"] or {}
        before = peers["before"] or {}
        for peer, counters in after.items():
            delta = {k: v - (before.get(peer) or {}).get(k, 0) for k, v in counters.items() if k != "queued"}
            lines.append(
                f"| `peers` of {name} -> {peer} | after: {json.dumps(counters)}; during the run: "
                f"{', '.join(f'{k} {v}' for k, v in delta.items())} |"
            )
    for name, batches in report.get("peer_batches_received", {}).items():
        if batches:
            sender = "dc1" if name.startswith("dc2") else "dc2"
            forwarded = sum(
                (peers["after"] or {}).get(name.split("-")[0], {}).get("forwarded", 0)
                - (peers["before"] or {}).get(name.split("-")[0], {}).get("forwarded", 0)
                for worker, peers in report["peers"].items()
                if worker.startswith(sender)
            )
            lines.append(
                f"| peer batches received by {name} (its access log) | {batches:,} during the run "
                f"({forwarded / batches:.2f} events per batch) |"
            )
    per = cpu_["per_process"]
    parts = ", ".join(f"{name} {value:.1f}" for name, value in per.items())
    lines += [
        f"| CPU while publishing | server {cpu_['server_s']:.1f} s, client {cpu_['client_s']:.1f} s over "
        f"{cpu_['wall_s']:.1f} s wall ({(cpu_['server_s'] + cpu_['client_s']) / cpu_['wall_s'] / cores * 100:.0f} % "
        f"of {cores} cores; other processes on the machine {cpu_['others_s']:.1f} s): {parts} |",
        f"| load average (1/5/15 min) start -> end | {' / '.join(f'{v:.2f}' for v in report['loadavg_start'])} -> "
        f"{' / '.join(f'{v:.2f}' for v in report['loadavg_end'])} |",
    ]
    if report.get("log_problems"):
        lines += ["", f"log problems: {json.dumps(report['log_problems'])[:3000]}"]
    return "\n".join(lines)


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
        for managed in run.managed():
            for line in managed.log_problems()[-10:]:
                print(f"  {managed.name}: {line}", file=sys.stderr)
        return 1
    finally:
        run.cleanup()
    print(render(report))
    print(f"\nJSON: {procs.write_report(report, args.results_dir)}")
    bad = any(d["lost"] or d["duplicates"] for d in report["deliveries"].values())
    return 2 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
