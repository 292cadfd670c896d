"""Dispatcher throughput: many topics, every publish through ONE worker, at rising rates; what gets through.

    .venv/bin/python -m bench.dispatch                                      # 1k, 2k, 5k, 8k events/s, 10 s each
    .venv/bin/python -m bench.dispatch --rates 500,1000 --step-secs 5 --connections 1000   # a quick look
    .venv/bin/python -m bench.dispatch --batch 1 --publish-concurrency 64   # many concurrent single POSTs
    .venv/bin/python -m bench.dispatch --profile-rates 5000                 # py-spy on the dispatcher at 5k/s
    .venv/bin/python -m bench.dispatch --areas bench/results/<file>.pyspy.txt   # where a profile's samples go

Its own redis-server and 1 + W workers: `d0`, the dispatcher, takes every `POST /api/publish` and holds no
stream; `w0`..`w<W-1>` hold the N streams (round-robin). Stream i reads its own topic `bench.own.<i>` and K of S
shared topics `bench.shared.<j>` (a fixed pseudo-random choice), so an own-topic event is hosted by one worker
and a shared one by up to W. Each step publishes rate x --step-secs events through d0 in batches of --batch
(`{"events": [...]}`; a --shared-fraction of them to shared topics, the rest to own topics round-robin), paced
open-loop over --publish-concurrency keep-alive connections; batches still unsent at --max-lag x --step-secs are
not sent (d0 behind). It then waits for every delivery (or --drain s). Per rate: events/s accepted and delivered,
latency (POST sent -> the event's last delivery; `published_at` -> last delivery), losses, CPU per process, and
channel-layer messages per event from /realtime/stats deltas (d0's `dispatch_*`, the receivers'
`received_messages`/`received_events`): at most the workers hosting the event's topic (the bound), and the
receivers' events exactly that bound.
"""

import argparse
import asyncio
import random
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import harness as h

COUNTERS_W = ("received_messages", "received_events", "stray_events", "delivered", "overflow_closed")
# Where a worker's profiled samples go. A sample counts for the first of AREAS with a frame anywhere on its stack;
# else for the area of its innermost frame that GENERIC_AREAS knows, skipping the event loop's own frames (at the
# root of every stack and under every await); else for the event loop.
AREAS = (
    (
        "membership lookup (Dispatcher._hosts: ZREMRANGEBYSCORE + ZRANGE per topic)",
        ("dispatcher.py:Dispatcher._hosts",),
    ),
    ("messages to workers (RedisChannelLayer.send)", ("channels_redis/core.py:RedisChannelLayer.send",)),
    ("group_send (one per topic and round)", ("channels_redis/core.py:RedisChannelLayer.group_send",)),
    ("channel-layer receive", ("channels_redis/core.py:RedisChannelLayer.receive",)),
    ("event build: id, JSON, SSE frame (publish.build_event)", ("realtime/publish.py:build_event",)),
    ("batch validation (DRF serializers)", ("rest_framework/serializers.py",)),
    ("authentication (DRF token, ORM)", ("rest_framework/authentication.py", "django/db/")),
    ("request body parsing (JSON)", ("rest_framework/request.py:Request._load_data_and_files",)),
    ("response rendering", ("rest_framework/renderers.py", "rest_framework/response.py")),
    ("fan-out writes to streams (Hub.fan_out)", ("realtime/hub.py:Hub.fan_out",)),
    ("keep-alives (Hub.write_all)", ("realtime/hub.py:Hub.write_all",)),
    ("Daphne's application checker", ("daphne/server.py:Server.application_checker",)),
)
LOOP_FRAMES = ("asyncio/", "twisted/internet/asyncioreactor.py", "daphne/server.py:Server.run", "daphne/cli.py")
GENERIC_AREAS = (
    ("sync/async hand-offs (asgiref, thread start, locks)", ("asgiref/", "threading.py", "concurrent/futures/")),
    ("Daphne / Twisted HTTP", ("daphne/", "twisted/")),
    ("other Django / DRF / middleware code", ("django/", "rest_framework/", "whitenoise/")),
    ("other Redis client work", ("redis/", "channels_redis/", "msgpack/")),
    ("other realtime code", ("realtime/",)),
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--workers", type=int, default=2, help="workers holding streams (default 2), besides d0")
    add("--connections", type=int, default=4000, help="streams, one own topic each (default 4000)")
    add("--shared-topics", type=int, default=40, help="shared topics (default 40)")
    add("--shared-per-connection", type=int, default=2, help="shared topics per stream (default 2)")
    add("--shared-fraction", type=float, default=0.01, help="share of events sent to shared topics (default 0.01)")
    add("--rates", default="1000,2000,5000,8000", help="events/s of each step (default 1k,2k,5k,8k)")
    add("--step-secs", type=float, default=10.0, help="seconds of publishing per step (default 10)")
    add("--batch", type=int, default=100, help="events per POST (default 100; 1 = single form)")
    add("--publish-concurrency", type=int, default=8, help="keep-alive POST connections to d0")
    add("--payload-bytes", type=int, default=0, help="padding added to each event's data")
    add("--max-lag", type=float, default=1.5, help="stop sending a step at this x --step-secs")
    add("--drain", type=float, default=15.0, help="max seconds to wait for a step's deliveries")
    add("--pause", type=float, default=1.0, help="seconds between steps")
    add("--clients", type=int, default=0, help="client processes (default: 1 per 19,000 streams)")
    add("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    add("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    add("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    add("--settle", type=float, default=2.0, help="seconds after connecting before publishing")
    add("--profile-rates", default="", help="py-spy record d0 during the steps at these rates")
    add("--profile-receivers", action="store_true", help="also py-spy the receiving workers")
    add("--profile-native", action="store_true", help="py-spy --native (C frames; pauses d0)")
    add("--profile-all-samples", action="store_true", help="every active sample, not only the GIL holder's")
    add("--areas", nargs="+", type=Path, default=[], help="only print where the samples of these py-spy files go")
    h.add_common_options(parser, "dispatch-w<W>-c<N>-b<B>", 540.0)
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
        args.profile_rates = [float(rate) for rate in args.profile_rates.split(",") if rate.strip()]
    except ValueError:
        parser.error("--rates and --profile-rates are comma-separated numbers")
    if not args.rates or min(args.rates) <= 0 or args.step_secs <= 0:
        parser.error("--rates must be positive numbers and --step-secs positive")
    if args.workers < 1 or args.connections < 1 or not 1 <= args.batch <= 500:
        parser.error("--workers and --connections must be positive, --batch within 1..500 (the API's limit)")
    if not 0 <= args.shared_fraction < 1 or not 0 <= args.shared_per_connection <= args.shared_topics:
        parser.error("--shared-fraction must be in [0, 1), --shared-per-connection at most --shared-topics")
    if args.shared_fraction > 0 and args.shared_per_connection == 0:
        parser.error("events to shared topics need subscribers: --shared-per-connection >= 1")
    h.streams_and_sources(parser, args, args.connections, args.workers)
    args.name = args.name or f"dispatch-w{args.workers}-c{args.connections}-b{args.batch}"
    return args


class Plan:
    """Subscriptions and event topics, all derived from the arguments (the same in every run)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.connections = args.connections
        chooser = random.Random(7)
        shared = range(args.shared_topics)
        self.shared_of = [chooser.sample(shared, args.shared_per_connection) for _ in range(args.connections)]
        self.shared_subscribers = [0] * args.shared_topics
        hosts: list[set[int]] = [set() for _ in range(args.shared_topics)]
        for index, chosen in enumerate(self.shared_of):
            for topic in chosen:
                self.shared_subscribers[topic] += 1
                hosts[topic].add(index % args.workers)
        self.shared_hosts = [len(workers) for workers in hosts]
        self.period = round(1 / args.shared_fraction) if args.shared_fraction > 0 else 0

    def topics_of(self, connection: int) -> list[str]:
        return [f"bench.own.{connection}", *(f"bench.shared.{topic}" for topic in self.shared_of[connection])]

    def target(self, seq: int) -> int:
        """The topic of event `seq`: 0..N-1 an own topic (round-robin), N.. a shared one."""
        if self.period and seq % self.period == self.period - 1:
            return self.connections + (seq // self.period) % len(self.shared_hosts)
        return seq % self.connections

    def name(self, target: int) -> str:
        own = target < self.connections
        return f"bench.own.{target}" if own else f"bench.shared.{target - self.connections}"

    def subscribers(self, target: int) -> int:
        return 1 if target < self.connections else self.shared_subscribers[target - self.connections]

    def hosts(self, target: int) -> int:
        """Workers hosting subscribers of the topic: the most channel-layer messages one event may cost."""
        return 1 if target < self.connections else self.shared_hosts[target - self.connections]


async def publish_paced(
    bench: Any,
    rate: float,
    first_seq: int,
    count: int,
    connections: list[h.HttpConnection],
    topic_of: Callable[[int], str],
) -> dict[str, Any]:
    """Send events first_seq..first_seq+count-1 (event seq to `topic_of(seq)`) at `rate` events/s, --batch per
    POST, over `connections`; marks `bench.sent_at` and `bench.accepted` per event. Shared by bench.dispatch and
    bench.topics, which differ only in where each event goes and through which workers."""
    args = bench.args
    padding = {"pad": "x" * args.payload_bytes} if args.payload_bytes else {}

    def seqs(post: int) -> range:
        return range(first_seq + post * args.batch, first_seq + min(count, (post + 1) * args.batch))

    async def send(post: int, connection: h.HttpConnection) -> int:
        now = time.time()
        events = []
        for seq in seqs(post):
            bench.sent_at[seq] = now
            data = {"seq": seq, "sent_at": now, **padding}
            events.append({"topic": topic_of(seq), "type": h.EVENT_TYPE, "data": data})
        body = events[0] if args.batch == 1 else {"events": events}
        status = (await connection.request("POST", "/api/publish", body, timeout=30))[0]
        if status == 202:
            bench.accepted[seqs(post).start : seqs(post).stop] = b"\x01" * len(events)
        return status

    posts = -(-count // args.batch)
    give_up = args.step_secs * args.max_lag
    size = lambda post: len(seqs(post))  # noqa: E731
    result = await bench.send_paced(posts, rate / args.batch, connections, send, give_up=give_up, size=size)
    del result["sent_at"]  # per POST; per event: bench.sent_at
    sent = sum(len(seqs(post)) for post in range(result["sent"]))
    result |= {"rate_target": rate, "events": count, "sent": sent, "not_sent": count - sent, "posts": result["sent"]}
    # Over the step's length at least: batches are sent at intervals, the last one before the step ends.
    window = max(args.step_secs, result["last_answer"] - result["first_sent"])
    return result | {"accepted_per_s": result["accepted"] / window}


class Dispatch(h.Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefix="bench-dispatch-")
        self.plan = Plan(args)
        self.total_events = sum(int(rate * args.step_secs) for rate in args.rates)
        self.sent_at = array("d", bytes(8 * self.total_events))
        self.accepted = bytearray(self.total_events)

    async def redis_commands(self) -> dict[str, dict[str, float]]:
        """INFO commandstats of the redis-server: calls and microseconds per command so far."""
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=self.redis[0].port)
        try:
            stats = await asyncio.wait_for(client.info("commandstats"), self.remaining(10))
        finally:
            await client.aclose()
        return {name[8:]: {"calls": float(v["calls"]), "usec": float(v["usec"])} for name, v in stats.items()}

    async def publish_step(self, rate: float, first_seq: int, count: int) -> dict[str, Any]:
        """Send `count` events from `first_seq` at `rate` events/s through d0, --batch per POST."""
        connections = [self.http(self.workers[0]) for _ in range(max(1, self.args.publish_concurrency))]
        return await publish_paced(
            self, rate, first_seq, count, connections, lambda seq: self.plan.name(self.plan.target(seq))
        )

    async def main(self) -> dict[str, Any]:
        args, report, plan = self.args, self.report, self.plan
        await self.start_site(args.workers + 1, names=["d0", *(f"w{index}" for index in range(args.workers))])
        receivers = self.workers[1:]
        report["plan"] = {"topics": args.connections + args.shared_topics}
        report["plan"] |= {"shared_subscribers": plan.shared_subscribers, "shared_hosts": plan.shared_hosts}
        # Warm-up: every receiver starts its realtime Worker; d0 serves the publish path (batch and single).
        await self.warm_up(receivers, publishes=0, streams=True)
        warm = {"topic": "bench.warmup", "type": h.EVENT_TYPE, "data": {"seq": -1, "sent_at": 0}}
        for _ in range(3):
            for body in (warm, {"events": [warm] * 10}):
                await self.call(self.workers[0], "POST", "/api/publish", body, expect=202)

        def request(index: int) -> bytes:
            return self.stream_request(plan.topics_of(index))

        shares = self.spread(receivers, args.connections, args.clients, args.sources, request)
        config = {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        report["connect"], _samples = await self.open_streams(shares, **config)
        report["stats_connected"] = await self.stats()
        await self.ask_all(("expect", self.total_events), 60)

        steps, first_seq, expected = [], 0, 0
        for rate in args.rates:
            count = int(rate * args.step_secs)
            print(f"step: {rate:g} events/s for {args.step_secs:g} s ({count:,} events) ...", file=sys.stderr)
            profiles = []
            if rate in args.profile_rates:
                workers = self.workers if args.profile_receivers else self.workers[:1]
                gil = not args.profile_all_samples
                options = {"native": args.profile_native, "gil": gil, "tag": f"-r{rate:g}"}
                profiles = self.start_profiles(workers, max(1, int(args.step_secs)), **options)
            stats_before, redis_before, before = await self.stats(), await self.redis_commands(), self.snapshot()
            published = await self.publish_step(rate, first_seq, count)
            seqs = range(first_seq, first_seq + count)
            expected += sum(plan.subscribers(plan.target(seq)) for seq in seqs if self.accepted[seq])
            done = lambda statuses, target=expected: sum(s["received"] for s in statuses) >= target  # noqa: E731
            published["drain"] = await self.drain(done, args.drain)
            after = self.snapshot()
            await asyncio.sleep(0.3)
            step = {"rate": rate, "first_seq": first_seq, "count": count, "publish": published}
            step["cpu"] = h.cpu_deltas(before, after)
            step["counters"] = counter_deltas(stats_before, await self.stats())
            step["redis"] = redis_deltas(redis_before, await self.redis_commands())
            if profiles:
                step["profiles"] = await self.finish_profiles(profiles, summarise)
            steps.append(step)
            first_seq += count
            self.check_alive()
            await asyncio.sleep(min(args.pause, self.remaining()))
        self.finish()
        results = await self.ask_all(("stop",), 120)
        report["steps"] = [self.evaluate(step, results) for step in steps]
        keys = ("max_rss_kb", "cpu_s", "comments", "unknown", "other_frames", "lost")
        report["clients"] = [{key: result[key] for key in keys} for result in results]
        return report

    def evaluate(self, step: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
        """Deliveries, latency and channel-layer messages of one step, from the clients' per-event records."""
        plan, first_seq, count = self.plan, step["first_seq"], step["count"]
        counts, last, published_at = [0] * count, [0.0] * count, [0.0] * count
        for result in results:
            result_last, result_published = array("d", result["last"]), array("d", result["published_at"])
            for offset in range(count):
                if n := result["counts"][first_seq + offset]:
                    counts[offset] += n
                    last[offset] = max(last[offset], result_last[first_seq + offset])
                    published_at[offset] = result_published[first_seq + offset]
        targets = [plan.target(first_seq + offset) for offset in range(count)]
        accepted = [offset for offset in range(count) if self.accepted[first_seq + offset]]
        expected = {offset: plan.subscribers(targets[offset]) for offset in accepted}
        complete = [offset for offset in accepted if counts[offset] >= expected[offset]]
        received = sum(min(counts[offset], expected[offset]) for offset in accepted)
        publish = step["publish"]
        window_end = max((last[offset] for offset in complete), default=publish["first_sent"])
        window = max(self.args.step_secs, window_end - publish["first_sent"])
        counters = step["counters"]
        receivers = [name for name in counters if name != "d0"]
        dispatch = counters.get("d0", {})
        published = dispatch.get("dispatch_published", 0)
        # One send = one channel-layer message from d0: a group_send per topic and round (fanned out by the layer
        # to each member worker), or where the core batches per worker, one message per worker and round.
        per_worker = "dispatch_group_sends" not in dispatch and "dispatch_worker_messages" in dispatch
        sends = dispatch.get("dispatch_worker_messages" if per_worker else "dispatch_group_sends", 0)
        messages = sum(counters[name]["received_messages"] for name in receivers)
        worker_events = sum(counters[name]["received_events"] for name in receivers)
        bound = sum(plan.hosts(targets[offset]) for offset in accepted)
        result = {**step, "accepted_events": len(accepted), "received_deliveries": received, "window_s": window}
        result["shared_events"] = sum(1 for offset in accepted if targets[offset] >= plan.connections)
        result |= {"expected_deliveries": sum(expected.values()), "lost": sum(expected.values()) - received}
        result["over_delivered"] = sum(max(0, counts[offset] - expected.get(offset, 0)) for offset in range(count))
        result |= {"events_complete": len(complete), "delivered_events_per_s": len(complete) / window}
        result["deliveries_per_s"] = received / window
        result["latency_from_sent_s"] = h.percentiles(last[i] - self.sent_at[first_seq + i] for i in complete)
        result["latency_from_published_s"] = h.percentiles(
            last[i] - published_at[i] for i in complete if published_at[i]
        )
        layer = {"published": published, "send_kind": "worker messages" if per_worker else "group sends"}
        layer |= {"sends": sends, "rounds": dispatch.get("dispatch_lookups"), "messages": messages, "bound": bound}
        layer |= {"worker_events": worker_events, "messages_per_event": messages / published if published else None}
        layer["bound_per_event"] = bound / len(accepted) if accepted else None
        layer["events_per_send"] = published / sends if sends else None
        layer |= {"within_bound": messages <= bound, "worker_events_equal_bound": worker_events == bound}
        layer["stray_events"] = sum(counters[name]["stray_events"] for name in receivers)
        return result | {"channel_layer": layer}


def counter_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Counters moved during a step: every numeric `dispatch_*` counter of d0 (their names vary with the core's
    version), and the receivers' COUNTERS_W."""
    result: dict[str, Any] = {}
    for name, values in after.items():
        keys: list[str] | tuple[str, ...] = COUNTERS_W
        if name == "d0":
            keys = [k for k, v in values.items() if k.startswith("dispatch_") and type(v) in (int, float)]
        result[name] = {key: values.get(key, 0) - before[name].get(key, 0) for key in keys}
    return result


def redis_deltas(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    commands = {}
    for name, values in after.items():
        if calls := values["calls"] - before.get(name, {}).get("calls", 0.0):
            commands[name] = {"calls": calls, "usec": values["usec"] - before.get(name, {}).get("usec", 0.0)}
    return {
        "calls": sum(value["calls"] for value in commands.values()),
        "usec": sum(value["usec"] for value in commands.values()),
        "commands": dict(sorted(commands.items(), key=lambda item: -item[1]["calls"])),
    }


def profile_areas(
    path: Path,
    areas_by_frame: tuple[tuple[str, tuple[str, ...]], ...] = AREAS,
    generic_areas: tuple[tuple[str, tuple[str, ...]], ...] = GENERIC_AREAS,
    loop_frames: tuple[str, ...] = LOOP_FRAMES,
) -> dict[str, Any]:
    """Shares of a raw py-spy profile (all threads) by area: `areas_by_frame` (a frame anywhere on the stack),
    then `generic_areas` by innermost frame outside `loop_frames` (bench.publish_many passes its own)."""
    areas: Counter[str] = Counter()
    for _thread, labels, samples in h.profile_stacks(path):
        area = next(
            (a for a, patterns in areas_by_frame if any(p in label for label in labels for p in patterns)), None
        )
        for label in reversed(labels if area is None else []):
            if not label.startswith(loop_frames):  # the loop's machinery: what it ran for is further out
                area = next((a for a, patterns in generic_areas if label.startswith(patterns)), None)
                if area:
                    break
        areas[area or "event loop itself (asyncio, uvloop, Twisted reactor)"] += samples
    total = sum(areas.values())
    return {"samples": total, "areas": [[area, n, round(n / total, 4)] for area, n in areas.most_common()]}


def summarise(path: Path) -> dict[str, Any]:
    return {
        "main_thread": h.summarise_profile(path, 25),
        "all_threads": h.summarise_profile(path, 25, main_thread_only=False),
        "areas": profile_areas(path),
    }


def render_areas(areas: dict[str, Any]) -> str:
    lines = [f"| area ({areas['samples']} samples, all threads) | share |", "| --- | ---: |"]
    return "\n".join(lines + [f"| {area} | {share * 100:.1f} % |" for area, _, share in areas["areas"]])


def render(report: dict[str, Any]) -> str:
    args, cores, conn, plan = report["config"], report["machine"]["nproc"], report["connect"], report["plan"]
    mode = f"batches of {args['batch']} events" if args["batch"] > 1 else "single-event POSTs"
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}.",
        "",
        f"{conn['held']:,} of {conn['requested']:,} streams held on {args['workers']} workers (errors: "
        f"{conn['errors'] or 'none'}), {plan['topics']:,} topics: each stream its own plus "
        f"{args['shared_per_connection']} of {args['shared_topics']} shared ones (subscribers per shared topic "
        f"{min(plan['shared_subscribers'])}-{max(plan['shared_subscribers'])}, hosted by "
        f"{min(plan['shared_hosts'])}-{max(plan['shared_hosts'])} workers). Every publish through d0 ({mode} over "
        f"{args['publish_concurrency']} connections); {args['shared_fraction'] * 100:g} % of events to shared "
        f"topics; {args['step_secs']:g} s per step.",
        "",
        "| target events/s | sent / accepted (202) | accepted events/s | delivered events/s | POST p50 / p99 ms | "
        "POST sent -> received p50 / p99 / max ms | `published_at` -> received p50 / p99 ms | lost | "
        "over-delivered | p99 < 1 s and all accepted |",
        "| ---: | --- | ---: | ---: | --- | --- | --- | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        pub, lat, latp = step["publish"], step["latency_from_sent_s"], step["latency_from_published_s"]
        post = pub["post_latency_s"]
        met = step["accepted_events"] == step["count"] and lat["p99"] is not None and lat["p99"] < 1.0
        met = met and step["lost"] == 0 and (pub["accepted_per_s"] or 0) >= 0.95 * step["rate"]
        behind = f" ({pub['not_sent']:,} not sent: d0 behind)" if pub["not_sent"] else ""
        lines.append(
            f"| {step['rate']:,.0f} | {pub['sent']:,} / {step['accepted_events']:,}{behind} | "
            f"{h.num(pub['accepted_per_s'])} | {h.num(step['delivered_events_per_s'])} | "
            f"{h.ms(post['p50'])} / {h.ms(post['p99'])} | {h.ms(lat['p50'])} / {h.ms(lat['p99'])} / "
            f"{h.ms(lat['max'])} | {h.ms(latp['p50'])} / {h.ms(latp['p99'])} | {step['lost']:,} | "
            f"{step['over_delivered']:,} | {'yes' if met else 'no'} |"
        )
    lines += [
        "",
        "| target events/s | published (d0) | sends by d0 | events per send | channel-layer messages (received by "
        "workers) | messages per event | bound: hosting workers per event | worker events = bound | Redis commands "
        "per event | d0 CPU per event | CPU server / client (s) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for step in report["steps"]:
        layer, published = step["channel_layer"], step["channel_layer"]["published"]
        per_event_us = step["cpu"].get("d0", 0.0) / published * 1e6 if published else None
        server, client = h.cpu_split(step["cpu"])
        ok = "yes" if layer["worker_events_equal_bound"] else f"no ({layer['worker_events']:,} vs {layer['bound']:,})"
        lines.append(
            f"| {step['rate']:,.0f} | {published:,} | {layer['sends']:,} {layer['send_kind']} | "
            f"{h.num(layer['events_per_send'], 2)} | {layer['messages']:,} | {h.num(layer['messages_per_event'], 3)} "
            f"{'<=' if layer['within_bound'] else '>'} | {h.num(layer['bound_per_event'], 3)} | {ok} | "
            f"{h.num(step['redis']['calls'] / published if published else None, 1)} | "
            f"{h.num(per_event_us)} µs | {server:.1f} / {client:.1f} |"
        )
    lines += ["", "CPU per step (seconds, per process; `bench` is the publisher and stats reader):", ""]
    lines += [f"- {s['rate']:,.0f}/s: {h.cpu_line(s['cpu'], cores)}" for s in report["steps"]]
    if top := report["steps"][-1]["redis"]["commands"]:
        commands = ", ".join(f"{name} {value['calls']:,.0f}" for name, value in list(top.items())[:8])
        lines += ["", f"Redis commands in the last step: {commands}"]
    for step in report["steps"]:
        for profile in step.get("profiles", []):
            lines += [
                "",
                f"py-spy {profile['worker']} at {step['rate']:g}/s: {profile.get('error', profile.get('path'))}",
            ]
            if "areas" in profile:
                lines += ["", render_areas(profile["areas"]), "", h.render_profile(profile["main_thread"])]
                lines.append(h.render_profile(profile["all_threads"]))
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in args.areas:
        print(f"{path}:\n\n{render_areas(profile_areas(path))}\n")
    return 0 if args.areas else h.run(Dispatch, args, render)


if __name__ == "__main__":
    sys.exit(main())
