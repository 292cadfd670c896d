"""Many small topics on many workers: N streams, each watching one of T topics; events to random topics at rising rates.

    .venv/bin/python -m bench.topics --connections 10000 --topics 1000 --workers 2 --rates 500,1000   # a quick look
    .venv/bin/python -m bench.topics      # 100,000 streams, 10,000 topics (10 viewers each), 6 workers, 500..4,000/s
    .venv/bin/python -m bench.topics --lean-client   # the client keeps per event only its count, first/last receipt
    .venv/bin/python -m bench.topics --worker-env REALTIME_LEASE_SECS=1200   # no lease renewal during the steps
    .venv/bin/python -m bench.topics --server uvicorn   # the same app under uvicorn (uvloop, httptools)

Its own redis-server and W workers (bench/harness.py). Stream i goes to worker i mod W (harness.spread) and reads
one topic `bench.topic.<t>`: the N/T viewers of each topic are a fixed random draw (seed --seed) over the streams,
so a topic's viewers land on workers as a random load balancer would place them (on 6 workers, 10 viewers span
about 5 workers), while every worker holds N/W streams. Each step publishes rate x --step-secs events, each to a
topic drawn at random, in batches of --batch (`POST /api/publish {"events": [...]}`), paced open-loop over
--publish-concurrency keep-alive connections spread over all the workers (each worker dispatches what it is
sent); batches still unsent at --max-lag x --step-secs are not sent. It then waits until every viewer of every
accepted event has it (or --drain s). Per step: events/s accepted, deliveries/s, delivery latency (the server's
`published_at`, set when it accepts the event -> each stream's receipt; and POST sent -> receipt), lost and
over-delivered deliveries, CPU of each worker, of the load client, of the publisher and of redis-server, and the
load average. A step meets the mark when every event was accepted (>= 95 % of the asked rate), nothing was lost
and the per-delivery p99 is under 1 s; the highest such rate is the figure.

With --lean-client the load client keeps no per-delivery latency: percentiles are then over events, of each
event's last receipt (its slowest viewer), which bounds every delivery's latency from above.
"""

import argparse
import asyncio
import math
import os
import random
import sys
from array import array
from collections import Counter
from typing import Any

from bench import harness as h
from bench.dispatch import Dispatch, publish_paced, redis_deltas
from bench.loadclient import Client

TOPIC_PREFIX = "bench.topic."
PER_EVENT = ("dispatch_worker_messages", "received_events", "delivered")  # worker counters shown per event published


class TopicsClient(Client):
    """The load client, plus one command: how many held streams read each topic (a failed stream is not expected)."""

    def on_viewers(self) -> dict[str, int]:
        held: Counter[str] = Counter()
        for stream in self.streams:
            path = stream.request.split(b" ", 2)[1]
            held[path.partition(b"topics=")[2].decode()] += 1
        return dict(held)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workers", type=int, default=6, help="workers; each holds streams and takes publishes (default 6)")
    add("--connections", type=int, default=100_000, help="streams (default 100,000)")
    add("--topics", type=int, default=10_000, help="topics, one per stream (default 10,000: 10 viewers each)")
    add("--rates", default="500,1000,2000,4000", help="events/s of each step (default 500,1000,2000,4000)")
    add("--step-secs", type=float, default=20.0, help="seconds of publishing per step (default 20)")
    add("--batch", type=int, default=50, help="events per POST (default 50; 1 = single-event POSTs)")
    add("--publish-concurrency", type=int, default=0, help="keep-alive POST connections (default 4 per worker)")
    add("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    add("--max-lag", type=float, default=1.5, help="stop sending a step at this x --step-secs")
    add("--drain", type=float, default=20.0, help="max seconds to wait for a step's deliveries")
    add("--pause", type=float, default=2.0, help="seconds between steps")
    add("--seed", type=int, default=17, help="seed of the viewers' topics and of the events' topics")
    add(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a worker setting, e.g. REALTIME_LEASE_SECS=600 (repeatable; livesite's own knobs are otherwise cleared)",
    )
    add("--lean-client", action="store_true", help="no per-delivery latency: per event count, first/last receipt")
    add("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    add("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    add("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    add("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    add("--settle", type=float, default=2.0, help="seconds after connecting before publishing")
    add("--server", choices=h.SERVERS, default="daphne", help="the workers run under (default daphne)")
    h.add_common_options(parser, "topics[-uvicorn]-w<W>-c<N>-t<T>", 900.0)
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    except ValueError:
        parser.error("--rates is comma-separated numbers")
    if not args.rates or min(args.rates) <= 0 or args.step_secs <= 0:
        parser.error("--rates must be positive numbers and --step-secs positive")
    if args.workers < 1 or not 1 <= args.topics <= args.connections or not 1 <= args.batch <= 500:
        parser.error("--workers positive, --topics within 1..--connections, --batch within 1..500 (the API's limit)")
    if any("=" not in setting for setting in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    args.publish_concurrency = args.publish_concurrency or 4 * args.workers
    h.streams_and_sources(parser, args, args.connections, args.workers)
    server = "" if args.server == "daphne" else f"-{args.server}"
    args.name = args.name or f"topics{server}-w{args.workers}-c{args.connections}-t{args.topics}"
    return args


def viewer_topics(connections: int, topics: int, seed: int) -> list[int]:
    """The topic of each stream: every topic gets connections // topics viewers (the first connections % topics one
    more), dealt to the streams in a random order. Streams go round-robin over the workers, so each viewer's worker
    is as random as a load balancer's choice, and every worker holds the same number of streams."""
    dealt = [index % topics for index in range(connections)]
    random.Random(seed).shuffle(dealt)
    return dealt


class Topics(h.Harness):
    async def redis_commands(self) -> dict[str, dict[str, float]]:
        """INFO commandstats of the run's redis-server, read as bench.dispatch reads it (that method needs only
        self.redis and the deadline, which every Harness has)."""
        return await Dispatch.redis_commands(self)  # type: ignore[arg-type]

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefix="bench-topics-")
        self.topic_of = viewer_topics(args.connections, args.topics, args.seed)
        self.counts = [int(rate * args.step_secs) for rate in args.rates]
        self.total_events = sum(self.counts)
        events = random.Random(args.seed + 1)
        # Each event's topic, drawn up front: the same events in every run with this seed.
        self.event_topic = array("l", (events.randrange(args.topics) for _ in range(self.total_events)))
        self.sent_at = array("d", bytes(8 * self.total_events))
        self.accepted = bytearray(self.total_events)
        self.viewers: list[int] = [0] * args.topics

    def placement(self) -> dict[str, Any]:
        """Viewers per topic and workers hosting each topic (the channel-layer messages one event may cost)."""
        workers = len(self.workers)
        hosts: list[set[int]] = [set() for _ in range(self.args.topics)]
        for index, topic in enumerate(self.topic_of):
            hosts[topic].add(index % workers)
        sizes = Counter(len(host) for host in hosts)
        viewers = Counter(Counter(self.topic_of).values())
        mean = sum(len(host) for host in hosts) / len(hosts)
        return {"viewers_per_topic": dict(sorted(viewers.items())), "hosts_per_topic": dict(sorted(sizes.items()))} | {
            "mean_hosts_per_topic": mean
        }

    async def publish_step(self, rate: float, first_seq: int, count: int) -> dict[str, Any]:
        """Send events first_seq..first_seq+count-1 at `rate` events/s, --batch per POST, over every worker."""
        workers = self.workers
        connections = [self.http(workers[index % len(workers)]) for index in range(self.args.publish_concurrency)]
        return await publish_paced(self, rate, first_seq, count, connections, self._topic_of)

    def _topic_of(self, seq: int) -> str:
        return f"{TOPIC_PREFIX}{self.event_topic[seq]}"

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        await self.start_site(args.workers, **dict(setting.partition("=")[::2] for setting in args.worker_env))
        report["placement"] = self.placement()
        await self.warm_up(publishes=1, streams=True)
        warm = {"topic": "bench.warmup", "type": h.EVENT_TYPE, "data": {"seq": -1, "sent_at": 0}}
        for worker in self.workers:  # the batch form of the publish path, on every worker
            await self.call(worker, "POST", "/api/publish", {"events": [warm] * 10}, expect=202)

        def request(index: int) -> bytes:
            return self.stream_request([f"{TOPIC_PREFIX}{self.topic_of[index]}"])

        shares = self.spread(self.workers, args.connections, args.clients, args.sources, request)
        config = {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        config |= {"latencies": not args.lean_client, "client_class": TopicsClient}
        report["connect"], samples = await self.open_streams(shares, **config)
        report["cpu_connect"] = h.cpu_deltas(samples["baseline"], samples["after_connect"])
        for held in await self.ask_all(("viewers",), 60):
            for topic, n in held.items():
                self.viewers[int(topic.removeprefix(TOPIC_PREFIX))] += n
        report["stats_connected"] = await self.stats()
        await self.ask_all(("expect", self.total_events), 60)

        steps, first_seq, expected, lat_offsets = [], 0, 0, [(0, 0)] * len(self.clients)
        for rate, count in zip(args.rates, self.counts, strict=True):
            print(f"step: {rate:g} events/s for {args.step_secs:g} s ({count:,} events) ...", file=sys.stderr)
            step: dict[str, Any] = {"rate": rate, "first_seq": first_seq, "count": count, "uptime_start": h.uptime()}
            stats_before, redis_before, before = await self.stats(), await self.redis_commands(), self.snapshot()
            step["publish"] = await self.publish_step(rate, first_seq, count)
            seqs = range(first_seq, first_seq + count)
            expected += sum(self.viewers[self.event_topic[seq]] for seq in seqs if self.accepted[seq])
            done = lambda statuses, target=expected: sum(s["received"] for s in statuses) >= target  # noqa: E731
            step["drain"] = await self.drain(done, args.drain)
            after = self.snapshot()
            step |= {"cpu": h.cpu_deltas(before, after), "loadavg_end": os.getloadavg(), "uptime_end": h.uptime()}
            step["redis"] = redis_deltas(redis_before, await self.redis_commands())
            step["counters"] = counter_deltas(stats_before, await self.stats())
            # Each step's deliveries are read now: per-event records by seq, latencies appended since the last step.
            results = await self.ask_all(("result",), 120)
            step |= self.evaluate(first_seq, count, results, lat_offsets)
            lat_offsets = [(len(r["lat_sent"]), len(r["lat_published"])) for r in results]
            step["clients_lost_streams"] = sum(result["lost"] for result in results)
            steps.append(step)
            first_seq += count
            self.check_alive()
            await asyncio.sleep(min(args.pause, self.remaining()))
        report["steps"] = steps
        report["stats_end"] = await self.stats()
        results = await self.ask_all(("stop",), 120)
        self.finish()
        keys = ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames", "lost", "duplicates", "resets")
        report["clients"] = [{key: result[key] for key in keys} for result in results]
        return report

    def evaluate(
        self, first_seq: int, count: int, results: list[dict[str, Any]], offsets: list[tuple[int, int]]
    ) -> dict[str, Any]:
        """Deliveries and latency of one step from the clients' records (offsets: latency bytes already counted)."""
        counts, first, last = [0] * count, [math.inf] * count, [0.0] * count
        published_at = [0.0] * count
        lat_sent, lat_published = array("d"), array("d")
        for client, (sent_off, published_off) in zip(results, offsets, strict=True):
            result_first, result_last = array("d", client["first"]), array("d", client["last"])
            result_published = array("d", client["published_at"])
            for offset in range(count):
                if n := client["counts"][first_seq + offset]:
                    seq = first_seq + offset
                    counts[offset] += n
                    first[offset] = min(first[offset], result_first[seq])
                    last[offset] = max(last[offset], result_last[seq])
                    published_at[offset] = result_published[seq]
            lat_sent.frombytes(client["lat_sent"][sent_off:])
            lat_published.frombytes(client["lat_published"][published_off:])
        accepted = [offset for offset in range(count) if self.accepted[first_seq + offset]]
        expected = {offset: self.viewers[self.event_topic[first_seq + offset]] for offset in accepted}
        complete = [offset for offset in accepted if counts[offset] >= expected[offset]]
        received = sum(min(counts[offset], expected[offset]) for offset in accepted)
        over = sum(max(0, counts[offset] - expected.get(offset, 0)) for offset in range(count))
        first_sent = self.sent_at[first_seq]
        end = max((last[offset] for offset in range(count) if counts[offset]), default=first_sent)
        window = max(self.args.step_secs, end - first_sent)
        result: dict[str, Any] = {"accepted_events": len(accepted), "events_complete": len(complete)}
        result |= {"expected_deliveries": sum(expected.values()), "received_deliveries": received}
        result |= {"lost": sum(expected.values()) - received, "over_delivered": over, "window_s": window}
        result["deliveries_per_s"] = received / window
        result["delivered_events_per_s"] = len(complete) / window
        if self.args.lean_client:
            # No per-delivery times: each event's slowest viewer stands for all of its deliveries.
            result["latency_kind"] = "per event, its last receipt"
            completion = [last[i] - published_at[i] for i in complete if published_at[i]]
            result["latency_published_s"] = h.percentiles(completion, (50, 90, 99, 99.9))
            result["latency_sent_s"] = h.percentiles(
                (last[i] - self.sent_at[first_seq + i] for i in complete), (50, 90, 99, 99.9)
            )
        else:
            result["latency_kind"] = "per delivery"
            result["latency_published_s"] = h.percentiles(lat_published, (50, 90, 99, 99.9))
            result["latency_sent_s"] = h.percentiles(lat_sent, (50, 90, 99, 99.9))
        result["completion_published_s"] = h.percentiles(last[i] - published_at[i] for i in complete if published_at[i])
        result["first_to_last_s"] = h.percentiles(last[i] - first[i] for i in complete)
        # The slowest completion of the events published in each second of the step: shows whether lateness is
        # steady (a backlog) or comes in bursts (a stall of some worker's loop).
        start = min((published_at[i] for i in complete if published_at[i]), default=0.0)
        timeline: dict[int, float] = {}
        for i in complete:
            if published_at[i]:
                second = int(published_at[i] - start)
                timeline[second] = max(timeline.get(second, 0.0), last[i] - published_at[i])
        result["worst_per_second_s"] = [round(timeline.get(s, 0.0), 3) for s in range(max(timeline, default=-1) + 1)]
        return result


def counter_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per worker, the numeric /realtime/stats counters that moved between two readings."""
    deltas = {}
    for name, values in after.items():
        earlier = before.get(name, {})
        numeric = {key: value for key, value in values.items() if type(value) in (int, float)}
        moved = {
            key: value - earlier.get(key, 0) for key, value in numeric.items() if key not in ("time", "started_at")
        }
        deltas[name] = {key: delta for key, delta in moved.items() if delta}
    return deltas


def counter_totals(step: dict[str, Any]) -> dict[str, float]:
    """The step's counters summed over the workers."""
    totals: Counter[str] = Counter()
    for values in step.get("counters", {}).values():
        totals.update(values)
    return dict(totals)


def meets(step: dict[str, Any]) -> bool:
    """Every event accepted at >= 95 % of the asked rate, nothing lost, per-delivery p99 under 1 s."""
    p99 = step["latency_published_s"]["p99"]
    rate_ok = (step["publish"]["accepted_per_s"] or 0) >= 0.95 * step["rate"]
    return step["accepted_events"] == step["count"] and rate_ok and step["lost"] == 0 and p99 is not None and p99 < 1


def cores(cpu: dict[str, float], names: list[str]) -> float:
    wall = cpu.get("wall_s") or 1.0
    return sum(cpu.get(name, 0.0) for name in names) / wall


def render(report: dict[str, Any]) -> str:
    args, conn, place = report["config"], report["connect"], report["placement"]
    steps = report["steps"]
    workers = [f"w{index}" for index in range(args["workers"])]
    kind = steps[0]["latency_kind"] if steps else "-"
    hosts = ", ".join(f"{n} workers: {topics:,}" for n, topics in place["hosts_per_topic"].items())
    viewers = ", ".join(f"{n}: {topics:,}" for n, topics in place["viewers_per_topic"].items())
    errors = ", ".join(f"{name} x{n}" for name, n in conn["errors"].items()) or "none"
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}.",
        "",
        f"{conn['held']:,} of {conn['requested']:,} streams held on {args['workers']} workers (failed: {errors}; "
        f"connect {conn['wall_s']:.1f} s, {conn['rate_per_s'] or 0:,.0f}/s), {args['clients']} client process(es). "
        f"{args['topics']:,} topics; viewers per topic {viewers}; topics hosted by {hosts} (mean "
        f"{place['mean_hosts_per_topic']:.2f}). Events to random topics, batches of {args['batch']} over "
        f"{args['publish_concurrency']} connections to all workers, {args['step_secs']:g} s per step. Latency: "
        f"{kind}.",
        "",
        "| target events/s | accepted events/s | deliveries/s | `published_at` -> received p50 / p99 / max ms | "
        "POST sent -> received p99 ms | lost / over-delivered | cores busy: workers (each) | load client | "
        "publisher | redis-server | others | load average at end | p99 < 1 s, nothing lost |",
        "| ---: | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for step in steps:
        pub, lat, cpu = step["publish"], step["latency_published_s"], step["cpu"]
        clients = [name for name in cpu if name.startswith("client")]
        each = " / ".join(f"{cores(cpu, [name]):.2f}" for name in workers)
        behind = f" ({pub['not_sent']:,} not sent)" if pub["not_sent"] else ""
        lines.append(
            f"| {step['rate']:,.0f} | {h.num(pub['accepted_per_s'])}{behind} | {h.num(step['deliveries_per_s'])} | "
            f"{h.ms(lat['p50'])} / {h.ms(lat['p99'])} / {h.ms(lat['max'])} | {h.ms(step['latency_sent_s']['p99'])} | "
            f"{step['lost']:,} / {step['over_delivered']:,} | {cores(cpu, workers):.2f} ({each}) | "
            f"{cores(cpu, clients):.2f} | {cores(cpu, ['bench']):.2f} | {cores(cpu, ['redis']):.2f} | "
            f"{cores(cpu, ['others']):.2f} | {' / '.join(f'{v:.2f}' for v in step['loadavg_end'])} | "
            f"{'yes' if meets(step) else 'no'} |"
        )
    passed = [step["rate"] for step in steps if meets(step)]
    lines += ["", f"Highest rate meeting the mark: {f'{max(passed):,.0f} events/s' if passed else 'none'}."]
    lines += ["", "Per step (POST latency, event completion, CPU seconds per process, Redis commands):", ""]
    for step in steps:
        pub, comp = step["publish"], step["completion_published_s"]
        top = ", ".join(f"{name} {v['calls']:,.0f}" for name, v in list(step["redis"]["commands"].items())[:5])
        totals = counter_totals(step)
        published = totals.get("dispatch_published", 0)
        per_event = {key: h.num(totals.get(key, 0) / published if published else None, 2) for key in PER_EVENT}
        lines.append(
            f"- {step['rate']:,.0f}/s: {pub['sent']:,} sent in {pub['posts']:,} POSTs, {step['accepted_events']:,} "
            f"accepted ({pub['statuses']}), POST p50 {h.ms(pub['post_latency_s']['p50'])} / p99 "
            f"{h.ms(pub['post_latency_s']['p99'])} ms; {step['received_deliveries']:,} of "
            f"{step['expected_deliveries']:,} deliveries in {step['window_s']:.1f} s; event complete (slowest viewer) "
            f"p50 {h.ms(comp['p50'])} / p99 {h.ms(comp['p99'])} / max {h.ms(comp['max'])} ms; streams closed "
            f"{step['clients_lost_streams']}; per event published: {per_event['dispatch_worker_messages']} "
            f"channel-layer messages, {per_event['received_events']} worker events, {per_event['delivered']} "
            f"deliveries, {h.num(step['redis']['calls'] / published if published else None, 1)} Redis commands; "
            f"streams closed for overflow {totals.get('overflow_closed', 0):,.0f}; "
            f"{h.cpu_line(step['cpu'], report['machine']['nproc'])}; Redis: {top}"
        )
    lines += ["", "Slowest event completion (`published_at` -> last viewer, ms) by second of publishing:", ""]
    for step in steps:
        worst = " ".join(f"{value * 1000:.0f}" for value in step.get("worst_per_second_s", []))
        lines.append(f"- {step['rate']:,.0f}/s: {worst}")
    if args.get("worker_env"):
        lines += ["", f"Worker settings: {', '.join(args['worker_env'])}."]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Topics, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
