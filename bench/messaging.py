"""Messaging at scale: C conversations of P participants on W workers, messages and typing at rising rates; and
what the participants-only read rule costs per subscription.

    .venv/bin/python -m bench.messaging                                  # 1,000 conversations of 5, 2 workers
    .venv/bin/python -m bench.messaging --rates 50,100,200,400 --seconds 10 --conversations 1000

Its own redis-server and W workers on a temp SQLite file (MESSAGING rate limits off). Seeding, one Django script:
C conversations, each of a `sender` member (in all of them, holding no stream) and P-1 members of its own, each
with a DRF token. Each of those (P-1) x C members holds ONE stream (bench/loadclient.py processes, spread over the
workers) on her conversation's `messages` and `typing` topics, authenticated with her token, so every stream passes
the participants-only rule (one database query) as it opens.

Phase 1, the rule's cost, before any stream is open: one participant's stream on w0 alternates POST and DELETE
/realtime/subscriptions of her conversation's topic, then of an open-namespace topic (`bench.*`, no rule) as many
times: the difference of the worker's CPU per POST is what the rule costs (a thread hop and one query).
Then, in one Django process of the site (no HTTP), the rule alone: --micro-checks checks of one participant's
conversation topics, one topic per check in turn (messages, typing, receipts), as `realtime.policies.acheck_read`
runs them, with messaging's participation cache off (MESSAGING ACCESS_CACHE_SIZE 0), on with its versions in
Redis (the workers' setting), and on with them in memory (the embedded default): wall and CPU microseconds per check.
A site without the cache (`--rev` before it) ignores the setting: its three rows are the same rule.
With --rule-only the run stops there.
Phase 2, per rate R of --rates: for --seconds the sender POSTs R messages/s, round-robin over the conversations,
and R typing starts/s, round-robin too (each conversation's start is announced: its last was more than 2 s ago
while C / R >= 2). Every message must reach its conversation's P-1 streams. Reported per rate: messages stored/s
(201s over the sending time), deliveries against expected, latency POST sent -> received and `published_at` ->
received (p50 / p99 / max), the same for typing starts, the workers' and the client processes' CPU.
"""

import argparse
import asyncio
import json
import math
import re
import sys
from array import array
from typing import Any

from bench import harness as h
from bench.loadclient import Client

SEED_SCRIPT = """
import json, sys, django
django.setup()
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from messaging.models import Conversation, Participant
conversations, size = int(sys.argv[1]), int(sys.argv[2])
sender, _ = User.objects.get_or_create(username="sender")
sender_token = Token.objects.get_or_create(user=sender)[0].key
users = User.objects.bulk_create(
    [User(username=f"m{c}-{p}", password="!") for c in range(conversations) for p in range(size - 1)]
)
tokens = Token.objects.bulk_create([Token(key=Token.generate_key(), user=user) for user in users])
rows = Conversation.objects.bulk_create([Conversation(title=f"bench {c}") for c in range(conversations)])
participants = [Participant(conversation=row, member=sender) for row in rows]
participants += [Participant(conversation=rows[i // (size - 1)], member=user) for i, user in enumerate(users)]
Participant.objects.bulk_create(participants, batch_size=2000)
members = [[t.key for t in tokens[c * (size - 1) : (c + 1) * (size - 1)]] for c in range(conversations)]
print(json.dumps({"sender": sender_token, "conversations": [row.pk for row in rows], "members": members}))
"""
MICRO_SCRIPT = """
import asyncio, json, sys, time, django
django.setup()
from django.conf import settings
from django.test.utils import override_settings
from messaging.models import Participant
from realtime import policies
checks = int(sys.argv[1])
row = Participant.objects.exclude(member__username="sender").order_by("pk").first()
topics = [f"conversation.{row.conversation_id}.{name}" for name in ("messages", "typing", "receipts")]

async def run():
    await policies.acheck_read(topics, row.member_id)  # warm: the first check of a pair always asks the database
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(checks):
        await policies.acheck_read([topics[n % 3]], row.member_id)
    return (time.perf_counter() - wall) / checks * 1e6, (time.process_time() - cpu) / checks * 1e6

result = {}
shared = settings.REDIS_URL
for name, size, redis_url in (("off", 0, shared), ("redis", 10_000, shared), ("memory", 10_000, "")):
    with override_settings(MESSAGING={**settings.MESSAGING, "ACCESS_CACHE_SIZE": size}, REDIS_URL=redis_url):
        wall_us, cpu_us = asyncio.run(run())
    result[name] = {"wall_us_per_check": wall_us, "cpu_us_per_check": cpu_us}
print(json.dumps(result))
"""
CONNECTED = re.compile(rb"event: connected\ndata: (\{[^\n]*\})\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="Daphne workers (default 2)")
    parser.add_argument("--conversations", type=int, default=1000, help="conversations (default 1000)")
    parser.add_argument("--participants", type=int, default=5, help="per conversation, the sender included (5)")
    parser.add_argument("--rates", default="50,100,200,400", help="messages (and typing starts) per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="sending time per rate (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="the sender's keep-alive connections (16)")
    parser.add_argument("--rule-posts", type=int, default=2000, help="subscription POSTs+DELETEs per topic kind")
    parser.add_argument("--micro-checks", type=int, default=5000, help="in-process rule checks per cache setting")
    parser.add_argument("--rule-only", action="store_true", help="measure the read rule only (no streams, no rates)")
    parser.add_argument("--clients", type=int, default=0, help="stream-reading processes (default: as needed)")
    parser.add_argument("--sources", type=int, default=0, help="source addresses (default: as needed)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    parser.add_argument("--drain", type=float, default=15.0, help="max seconds to wait for the last deliveries")
    h.add_common_options(parser, "messaging-w<W>", 600.0)
    args = parser.parse_args(argv)
    args.rate_list = [float(rate) for rate in args.rates.split(",") if rate.strip()]
    if args.participants < 2 or args.conversations < 1 or not args.rate_list or min(args.rate_list) <= 0:
        parser.error("--participants >= 2, --conversations >= 1 and positive --rates are needed")
    h.streams_and_sources(parser, args, args.conversations * (args.participants - 1), args.workers)
    args.name = args.name or f"messaging-w{args.workers}"
    return args


class MessagingClient(Client):
    """The load client, with typing events told apart (they have no `id:`, being never stored) and a reset of what
    it watched between rates."""

    def watch(self, stream: Any, event_id: bytes, event: bytes, data: bytes, now: float) -> None:
        super().watch(stream, event_id or data, event, data, now)

    def on_reset(self) -> int:
        dropped = len(self.watched_events)
        self.watched_index, self.watched_events, self.watched_times = {}, [], []
        self.watched_logs, self.watched_received = {}, 0
        return dropped


class Messaging(h.Harness):
    async def seed(self) -> None:
        redis = self.start_redis()
        env = self.site_env(redis, MESSAGING_RATE_LIMITS="message=0,typing=0,conversation=0")
        await self.prepare_site(env)
        print(f"seeding {self.args.conversations:,} conversations ...", file=sys.stderr)
        self.site = await self.django(env, SEED_SCRIPT, str(self.args.conversations), str(self.args.participants))
        self.env = env
        self.start_workers(self.args.workers, env)

    # -- phase 1: the read rule's cost -------------------------------------------------------------------

    async def hold_stream(self, token: str) -> tuple[str, asyncio.StreamWriter, asyncio.Task[None]]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.workers[0].port)
        writer.write(stream_request([], token))
        seen = b""
        while (found := CONNECTED.search(seen)) is None:
            chunk = await asyncio.wait_for(reader.read(65536), self.remaining(10))
            if not chunk:
                raise h.BenchError(f"the worker closed a stream: {seen[:300]!r}")
            seen += chunk
        return json.loads(found.group(1))["connection_id"], writer, asyncio.create_task(_discard(reader))

    async def rule_cost(self) -> dict[str, Any]:
        token, conversation = self.site["members"][0][0], self.site["conversations"][0]
        connection_id, writer, reader = await self.hold_stream(token)
        worker = self.workers[0]
        result: dict[str, Any] = {}
        try:
            for kind, topic in (("open", "bench.rule"), ("participants", f"conversation.{conversation}.messages")):

                async def change(seq: int, connection: h.HttpConnection, topic: str = topic) -> int:
                    body = {"connection_id": connection_id, "topics": [topic]}
                    method = "POST" if seq % 2 == 0 else "DELETE"
                    return (await connection.request(method, "/realtime/subscriptions", body))[0]

                await self.send_paced(200, math.inf, [self.http(worker, token)], change, accept=200)  # warm up
                before = h.cpu_seconds(worker.pid)
                sent = await self.send_paced(
                    self.args.rule_posts, math.inf, [self.http(worker, token)], change, accept=200
                )
                cpu = h.cpu_seconds(worker.pid) - before
                result[kind] = {
                    "accepted": sent["accepted"],
                    "statuses": sent["statuses"],
                    "cpu_ms_per_change": cpu / max(sent["accepted"], 1) * 1000,
                    "latency_ms": {k: v and v * 1000 for k, v in sent["post_latency_s"].items()},
                }
        finally:
            writer.close()
            reader.cancel()
        # Only a POST runs the rule (a DELETE never does): the difference per POST is the rule's.
        per_post = 2 * (result["participants"]["cpu_ms_per_change"] - result["open"]["cpu_ms_per_change"])
        return result | {"rule_cpu_ms_per_subscription": per_post}

    # -- phase 2: messages and typing at rising rates ---------------------------------------------------------

    async def open_member_streams(self) -> dict[str, Any]:
        requests = [
            stream_request([f"conversation.{c}.messages", f"conversation.{c}.typing"], token)
            for c, tokens in zip(self.site["conversations"], self.site["members"], strict=True)
            for token in tokens
        ]
        shares = self.spread(self.workers, len(requests), self.args.clients, self.args.sources, requests.__getitem__)
        config = {"watch_types": ["message.created", "typing"], "client_class": MessagingClient}
        connect, samples = await self.open_streams(shares, **config)
        return {"connect": connect, "memory": samples}

    async def rate_step(self, step: int, rate: float, held: int) -> dict[str, Any]:
        args, conversations = self.args, self.site["conversations"]
        count = max(1, round(rate * args.seconds))
        await self.ask_all(("reset",), 30)
        announced = [0]

        async def message(item: int, connection: h.HttpConnection) -> int:
            path = f"/api/conversations/{conversations[item % len(conversations)]}/messages"
            return (await connection.request("POST", path, {"text": f"bench {step} {item}"}))[0]

        async def typing(item: int, connection: h.HttpConnection) -> int:
            # Offset by half the conversations: a conversation's start is not stopped at once by its message.
            conversation = conversations[(item + len(conversations) // 2) % len(conversations)]
            status, body = await connection.request(
                "POST", f"/api/conversations/{conversation}/typing", {"typing": True}
            )
            announced[0] += bool(status == 200 and body.get("announced"))
            return status

        def pool() -> list[h.HttpConnection]:
            return [
                self.http(self.workers[i % len(self.workers)], self.site["sender"]) for i in range(args.connections)
            ]

        print(f"rate {rate:g}/s: {count} messages and {count} typing starts to {held} streams ...", file=sys.stderr)
        before = self.snapshot()
        sent, typed = await asyncio.gather(
            self.send_paced(count, rate, pool(), message, accept=201),
            self.send_paced(count, rate, pool(), typing, accept=200),
        )
        per_conversation = args.participants - 1
        expected = sent["accepted"] * per_conversation

        def done(statuses: list[dict[str, Any]]) -> bool:
            got = sum(
                n for status in statuses for _, kind, _, n in status.get("watched_events", []) if kind != "typing"
            )
            return got >= expected

        drain = await self.drain(done, args.drain)
        after = self.snapshot()
        results = await self.ask_all(("result",), 60)
        step_report = analyse(results, sent, step, per_conversation)
        step_report |= {"rate": rate, "messages": strip(sent), "typing": strip(typed), "announced": announced[0]}
        step_report |= {"drain": drain, "cpu": h.cpu_deltas(before, after), "expected_deliveries": expected}
        return step_report

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        self.site_root()
        await self.seed()
        await asyncio.sleep(args.settle)
        self.check_alive()
        print("phase 1: the participants-only rule's cost per subscription ...", file=sys.stderr)
        report["rule"] = await self.rule_cost()
        print("the rule alone, in one process: cache off, on (Redis versions), on (in memory) ...", file=sys.stderr)
        report["rule_in_process"] = await self.django(self.env, MICRO_SCRIPT, str(args.micro_checks))
        if args.rule_only:
            report["worker_stats"] = await self.stats()  # messaging_access_* shows what the cache answered
            report["exit_status"] = 0
            self.finish()
            return report
        report["streams"] = await self.open_member_streams()
        held = report["streams"]["connect"]["held"]
        report["steps"] = []
        for step, rate in enumerate(args.rate_list):
            await asyncio.sleep(args.settle)
            self.check_alive()
            report["steps"].append(await self.rate_step(step, rate, held))
        report["worker_stats"] = await self.stats()
        lost = sum(s["deliveries"]["lost"] for s in report["steps"])
        report["exit_status"] = 0 if lost == 0 and held == report["streams"]["connect"]["requested"] else 2
        self.finish()
        return report


def stream_request(topics: list[str], token: str) -> bytes:
    path = f"/realtime/connect?topics={','.join(topics)}" if topics else "/realtime/connect"
    headers = f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\nAuthorization: Token {token}\r\n"
    return f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode()


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def strip(sent: dict[str, Any]) -> dict[str, Any]:
    """A send_paced() result without its per-item arrays (kept out of the JSON)."""
    return {key: value for key, value in sent.items() if key != "sent_at"}


def analyse(results: list[dict[str, Any]], sent: dict[str, Any], step: int, per_conversation: int) -> dict[str, Any]:
    """Deliveries of this step's messages (each to its conversation's streams) and of typing starts, timed from the
    POST and from `published_at`."""
    from_post, from_published, typing_latency = array("d"), array("d"), array("d")
    received: dict[int, int] = {}
    for result in results:
        for (_, kind, data), raw in zip(result["watched_events"], result["watched_times"], strict=True):
            times, frame = array("d", raw), json.loads(data)
            if kind == "typing":
                if frame["data"].get("typing"):
                    typing_latency.extend(t - frame["published_at"] for t in times)
                continue
            label, _, item_text = frame["data"]["text"].rpartition(" ")
            if label != f"bench {step}":
                continue
            item = int(item_text)
            received[item] = received.get(item, 0) + len(times)
            from_post.extend(t - sent["sent_at"][item] for t in times)
            from_published.extend(t - frame["published_at"] for t in times)
    accepted = sent["accepted"]
    got = sum(min(n, per_conversation) for n in received.values())
    duplicates = sum(max(0, n - per_conversation) for n in received.values())
    wall = sent["wall_s"]  # first POST sent -> last one answered
    return {
        "stored_per_s": sent["per_s"],
        "deliveries": {
            "received": got,
            "lost": accepted * per_conversation - got,
            "duplicates": duplicates,
            "per_s": got / wall if wall > 0 else None,
        },
        "latency_from_post_s": h.percentiles(from_post, (50, 99)),
        "latency_from_published_s": h.percentiles(from_published, (50, 99)),
        "typing_deliveries": len(typing_latency),
        "typing_latency_from_published_s": h.percentiles(typing_latency, (50, 99)),
    }


def render(report: dict[str, Any]) -> str:
    args, rule = report["config"], report["rule"]
    connect = report["streams"]["connect"] if "streams" in report else {"held": 0, "requested": 0}
    lines = [
        f"### {args['name']} ({report['date']})",
        "",
        f"site {h.code_label(report)}; {args['conversations']:,} conversations of {args['participants']}; "
        f"{connect['held']:,} of {connect['requested']:,} member streams held on {args['workers']} workers",
        "",
        "| read rule | worker CPU per subscription change | POST/DELETE latency p50 / p99 |",
        "| --- | --- | --- |",
    ]
    for kind in ("open", "participants"):
        row, latency = rule[kind], rule[kind]["latency_ms"]
        lines.append(
            f"| {kind} | {row['cpu_ms_per_change']:.3f} ms ({row['accepted']:,} accepted) | "
            f"{latency['p50']:.1f} / {latency['p99']:.1f} ms |"
        )
    lines += [
        "",
        f"The participants-only rule costs about {rule['rule_cpu_ms_per_subscription']:.2f} ms of worker CPU per "
        "subscription POST (its one query and thread hop, or its cache hit).",
        "",
        "| the rule alone, in one process | wall per check | CPU per check |",
        "| --- | --- | --- |",
    ]
    for name, label in (
        ("off", "cache off"),
        ("redis", "cache on, versions in Redis"),
        ("memory", "cache on, in memory"),
    ):
        row = report.get("rule_in_process", {}).get(name)
        if row:
            lines.append(f"| {label} | {row['wall_us_per_check']:.0f} µs | {row['cpu_us_per_check']:.0f} µs |")
    if "steps" not in report:
        lines += [
            "",
            f"load {h.load_line(report)}; worker log problems: {sum(map(len, report['log_problems'].values()))}",
        ]
        return "\n".join(lines)
    lines += [
        "",
        "| rate asked | stored/s | deliveries (lost, dup) | POST -> stream p50 / p99 / max | published -> stream "
        "p99 | typing starts delivered, p99 | worker CPU | client CPU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for step in report["steps"]:
        post, published = step["latency_from_post_s"], step["latency_from_published_s"]
        typing = step["typing_latency_from_published_s"]
        server, client = h.cpu_split(step["cpu"])
        wall = step["cpu"].get("wall_s") or 1
        lines.append(
            f"| {step['rate']:g}/s | {h.num(step['stored_per_s'])} | {step['deliveries']['received']:,} "
            f"({step['deliveries']['lost']}, {step['deliveries']['duplicates']}) | {h.pct(post)} | "
            f"{h.ms(published['p99'])} | {step['typing_deliveries']:,}, {h.ms(typing['p99'])} | "
            f"{server / wall:.2f} cores | {client / wall:.2f} cores |"
        )
    lines += ["", f"load {h.load_line(report)}; worker log problems: {sum(map(len, report['log_problems'].values()))}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(Messaging, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
