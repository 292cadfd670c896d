"""Redis memory of the per-topic history: `INFO memory` before and after storing a known number of events.

    .venv/bin/python -m bench.history_memory --rev 864289f      # history on (REALTIME_HISTORY_SIZE 1000)
    .venv/bin/python -m bench.history_memory --rev c61c4f4      # before history: what the same publishes leave

Its own redis-server and one worker, and no stream: nothing hosts the topics, so what the publishes leave in
Redis is the history alone. --events like-sized events (`like.created`, data shaped as
likes.services.like_event_data makes it: video, count, covered and 5 likers with id and name) go through
`POST /api/publish` in batches of --batch, round-robin over --topics topics `bench.video.<i>.likes`, in two
phases: one event per topic first (each topic's two keys appear), then the rest. `used_memory` (and
`used_memory_dataset`) is read before and after each phase, and what the history holds is counted (LLEN / 2 of
every history list, the meta hashes, MEMORY USAGE of a sample of keys). Reported: bytes per 1,000 stored events
all-in (both phases over every event stored) and marginal (the second phase: the keys existed already), and
the per-topic cost of the first phase.
"""

import argparse
import asyncio
import sys
import time
from typing import Any

from bench import harness as h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--topics", type=int, default=4000, help="topics (default 4,000)")
    add("--events", type=int, default=100_000, help="events in all (default 100,000: 25 per topic)")
    add("--batch", type=int, default=100, help="events per POST (default 100)")
    add("--publish-concurrency", type=int, default=4, help="keep-alive POST connections")
    add("--rate", type=float, default=5000.0, help="events/s asked (default 5,000)")
    add("--likers", type=int, default=5, help="likers named in each event (default 5, as likes/services.py)")
    add("--worker-env", action="append", default=[], metavar="NAME=VALUE", help="a worker setting (repeatable)")
    h.add_common_options(parser, "history-memory-t<T>-e<N>", 300.0)
    args = parser.parse_args(argv)
    if args.topics < 1 or args.events < args.topics or not 1 <= args.batch <= 500 or args.rate <= 0:
        parser.error("--topics >= 1, --events >= --topics, --batch within 1..500, --rate > 0")
    if any("=" not in item for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    args.name = args.name or f"history-memory-t{args.topics}-e{args.events}"
    return args


def like_data(seq: int, topic: int, likers: int) -> dict[str, Any]:
    """A `like.created` payload as likes.services.like_event_data builds it."""
    people = [{"id": 1000 + (seq + k) % 5000, "name": f"Member {1000 + (seq + k) % 5000}"} for k in range(likers)]
    return {"video": topic, "count": 1000 + seq // 7, "covered": 1 + seq % 3, "by": people}


class HistoryMemory(h.Harness):
    async def redis_client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis(host="127.0.0.1", port=self.redis[0].port)

    async def memory(self) -> dict[str, Any]:
        client = await self.redis_client()
        try:
            info = await client.info("memory")
            keys = await client.dbsize()
        finally:
            await client.aclose()
        names = ("used_memory", "used_memory_dataset", "used_memory_rss", "mem_fragmentation_ratio")
        return {name: info.get(name) for name in names} | {"keys": keys, "time": time.time()}

    async def census(self) -> dict[str, Any]:
        """What the history holds: lists and their entries (2 per event), meta hashes, sampled key sizes."""
        client = await self.redis_client()
        lists = metas = entries = 0
        samples: dict[str, list[int]] = {"list": [], "meta": []}
        encodings: dict[str, int] = {}
        try:
            async for key in client.scan_iter(match="*history*", count=1000):
                name = key.decode()
                if name.endswith(":m"):
                    metas += 1
                    if len(samples["meta"]) < 50:
                        samples["meta"].append(await client.memory_usage(key, samples=0) or 0)
                    continue
                lists += 1
                entries += await client.llen(key)
                if len(samples["list"]) < 50:
                    samples["list"].append(await client.memory_usage(key, samples=0) or 0)
                    encoding = (await client.object("encoding", key)).decode()
                    encodings[encoding] = encodings.get(encoding, 0) + 1
            frame = None
            async for key in client.scan_iter(match="*history*", count=1000):
                if not key.endswith(b":m"):
                    frame = await client.lindex(key, 1)
                    break
        finally:
            await client.aclose()
        mean = lambda values: sum(values) / len(values) if values else None  # noqa: E731
        return {
            "lists": lists,
            "metas": metas,
            "stored_events": entries // 2,
            "list_memory_usage_mean": mean(samples["list"]),
            "meta_memory_usage_mean": mean(samples["meta"]),
            "list_encodings": encodings,
            "frame_bytes": len(frame) if frame else None,
            "frame_example": frame.decode(errors="replace") if frame else None,
        }

    async def publish(self, first: int, count: int) -> dict[str, Any]:
        args = self.args
        worker = self.workers[0]

        async def send(post: int, connection: h.HttpConnection) -> int:
            seqs = range(first + post * args.batch, first + min(count, (post + 1) * args.batch))
            events = [
                {
                    "topic": f"bench.video.{seq % args.topics}.likes",
                    "type": "like.created",
                    "data": like_data(seq, seq % args.topics, args.likers),
                }
                for seq in seqs
            ]
            return (await connection.request("POST", "/api/publish", {"events": events}, timeout=30))[0]

        posts = -(-count // args.batch)
        size = lambda post: min(args.batch, count - post * args.batch)  # noqa: E731
        connections = [self.http(worker) for _ in range(args.publish_concurrency)]
        result = await self.send_paced(posts, args.rate / args.batch, connections, send, size=size)
        del result["sent_at"]
        if result["accepted"] != count:
            raise h.BenchError(
                f"{count - result['accepted']} of {count} events were not accepted: {result['statuses']}"
            )
        return result

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        overrides = dict(item.split("=", 1) for item in args.worker_env)
        await self.start_site(1, **overrides)
        await self.warm_up(publishes=3)
        await asyncio.sleep(1.0)
        phases = {"baseline": await self.memory()}
        first_phase = args.topics
        print(f"phase 1: {first_phase:,} events, one per topic ...", file=sys.stderr)
        report["publish_1"] = await self.publish(0, first_phase)
        await asyncio.sleep(1.0)
        phases["one_per_topic"] = await self.memory()
        report["census_1"] = await self.census()
        rest = args.events - first_phase
        print(f"phase 2: {rest:,} more events ...", file=sys.stderr)
        report["publish_2"] = await self.publish(first_phase, rest)
        await asyncio.sleep(1.0)
        phases["all"] = await self.memory()
        report["census_2"] = await self.census()
        report["phases"] = phases
        report["stats"] = await self.stats()
        self.finish()
        stored_1, stored_2 = report["census_1"]["stored_events"], report["census_2"]["stored_events"]
        result: dict[str, Any] = {"stored_1": stored_1, "stored_2": stored_2}
        for key in ("used_memory", "used_memory_dataset"):
            base, one, every = (phases[phase][key] for phase in ("baseline", "one_per_topic", "all"))
            result[f"{key}_delta_1"], result[f"{key}_delta_all"] = one - base, every - base
            result[f"{key}_per_1000_all_in"] = (every - base) / stored_2 * 1000 if stored_2 else None
            added = stored_2 - stored_1
            result[f"{key}_per_1000_marginal"] = (every - one) / added * 1000 if added else None
            result[f"{key}_per_topic_first_event"] = (one - base) / args.topics
        report["result"] = result
        return report


def render(report: dict[str, Any]) -> str:
    args, res, phases = report["config"], report["result"], report["phases"]
    census = report["census_2"]
    per = lambda value: "-" if value is None else f"{value:,.0f} B"  # noqa: E731
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}. "
        f"Date: {report['date']}.",
        "",
        f"{args['events']:,} `like.created` events ({args['likers']} likers each) over {args['topics']:,} topics, "
        f"batches of {args['batch']}, one worker, no stream. Stored: {res['stored_1']:,} after phase 1, "
        f"{res['stored_2']:,} in the end ({census['lists']:,} lists, {census['metas']:,} meta hashes; list "
        f"encodings of a sample {census['list_encodings']}); a stored frame is {census['frame_bytes']} bytes.",
        "",
        "| reading | baseline | phase 1 (one per topic) | all |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key in ("used_memory", "used_memory_dataset", "used_memory_rss", "keys"):
        cells = " | ".join(f"{phases[phase][key]:,}" for phase in ("baseline", "one_per_topic", "all"))
        lines.append(f"| {key} | {cells} |")
    lines += [
        "",
        "| figure | used_memory | used_memory_dataset |",
        "| --- | ---: | ---: |",
        f"| per 1,000 stored events, all-in | {per(res['used_memory_per_1000_all_in'])} | "
        f"{per(res['used_memory_dataset_per_1000_all_in'])} |",
        f"| per 1,000 stored events, marginal (phase 2) | {per(res['used_memory_per_1000_marginal'])} | "
        f"{per(res['used_memory_dataset_per_1000_marginal'])} |",
        f"| per topic, its first event (phase 1) | {per(res['used_memory_per_topic_first_event'])} | "
        f"{per(res['used_memory_dataset_per_topic_first_event'])} |",
        "",
        f"MEMORY USAGE means of sampled keys: list {h.num(census['list_memory_usage_mean'])} B, meta hash "
        f"{h.num(census['meta_memory_usage_mean'])} B. Example frame: `{(census['frame_example'] or '')[:400]!r}`",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(HistoryMemory, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
