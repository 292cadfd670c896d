"""What one `POST /api/publish` costs: single-event POSTs as fast as C keep-alive connections allow, one worker.

    .venv/bin/python -m bench.publish_api                       # 3,000 POSTs over 8 connections
    .venv/bin/python -m bench.publish_api --posts 5000 --concurrency 16 --rev HEAD~1
    .venv/bin/python -m bench.publish_api --kind subscribe      # subscription POSTs/DELETEs instead

With `--kind subscribe`, each keep-alive connection holds one stream on the same worker and alternates
`POST` and `DELETE /realtime/subscriptions` of a topic of its own, so every request also registers or
deregisters the worker for that topic in Redis: the whole cost of a subscription change.

A private redis-server, one Daphne worker on it (SQLite site, a staff token), no streams: the figure is the publish
path alone (HTTP, authentication, validation, the dispatcher's round). Reports POSTs/s, the worker's CPU per POST
(from /proc, threads included), POST latency p50/p99 and the status codes.
"""

import argparse
import asyncio
import json
import math
import re
import sys
from typing import Any

from bench import harness as h


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=3000, help="POSTs measured (default 3000)")
    parser.add_argument("--warmup", type=int, default=300, help="POSTs before measuring (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--kind", choices=("publish", "subscribe"), default="publish", help="what each POST does")
    parser.add_argument("--profile", action="store_true", help="py-spy the worker (all threads) while measuring")
    parser.add_argument("--profile-native", action="store_true", help="with --profile: C frames too (pauses it)")
    h.add_common_options(parser, "publish-api", 120.0)
    args = parser.parse_args(argv)
    if args.posts < 1 or args.concurrency < 1:
        parser.error("--posts and --concurrency must be positive")
    args.name = args.name or ("publish-api" if args.kind == "publish" else "subscribe-api")
    return args


CONNECTED = re.compile(rb"event: connected\ndata: (\{[^\n]*\})\n")


class PublishApi(h.Harness):
    held: list[tuple[str, asyncio.StreamWriter, asyncio.Task[None]]]

    async def post_many(self, count: int) -> dict[str, Any]:
        connections = [self.http(self.workers[0]) for _ in range(self.args.concurrency)]
        if self.args.kind == "subscribe":
            streams = {id(connection): index for index, connection in enumerate(connections)}

            async def change(seq: int, connection: h.HttpConnection) -> int:
                index = streams[id(connection)]
                body = {"connection_id": self.held[index][0], "topics": [f"bench.sub.{index}"]}
                method = "POST" if seq % 2 == 0 else "DELETE"
                return (await connection.request(method, "/realtime/subscriptions", body))[0]

            return await self.send_paced(count, math.inf, connections, change, accept=200)

        async def send(seq: int, connection: h.HttpConnection) -> int:
            body = {"topic": "bench.publish", "type": h.EVENT_TYPE, "data": {"seq": seq}}
            return (await connection.request("POST", "/api/publish", body))[0]

        return await self.send_paced(count, math.inf, connections, send)

    async def hold_streams(self, count: int) -> None:
        """Open `count` streams on the worker and keep reading them; remember their connection ids."""
        self.held = []
        for _ in range(count):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.workers[0].port)
            writer.write(self.stream_request([]))
            seen = b""
            while (found := CONNECTED.search(seen)) is None:
                chunk = await asyncio.wait_for(reader.read(65536), self.remaining(10))
                if not chunk:
                    raise h.BenchError(f"the worker closed a stream: {seen[:300]!r}")
                seen += chunk
            hello = json.loads(found.group(1))
            self.held.append((hello["connection_id"], writer, asyncio.create_task(_discard(reader))))

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        await self.start_site(1)
        worker = self.workers[0]
        if args.kind == "subscribe":
            await self.hold_streams(args.concurrency)
        await self.post_many(args.warmup)
        options = {"native": args.profile_native}
        profiles = self.start_profiles([worker], 600, **options) if args.profile else []
        cpu_before = h.cpu_seconds(worker.pid)
        measured = await self.post_many(args.posts)
        cpu = h.cpu_seconds(worker.pid) - cpu_before
        if profiles:
            summarise = lambda path: h.summarise_profile(path, 25, main_thread_only=False)  # noqa: E731
            report["profile"] = (await self.finish_profiles(profiles, summarise, stop=True))[0]
        self.finish()
        report |= {
            "accepted": measured["accepted"],
            "statuses": measured["statuses"],
            "posts_per_s": measured["per_s"],
            "worker_cpu_s": cpu,
            "worker_cpu_ms_per_post": cpu / max(measured["accepted"], 1) * 1000,
            "worker_cores": cpu / measured["wall_s"] if measured["wall_s"] > 0 else None,
            "latency_ms": {key: value and value * 1000 for key, value in measured["post_latency_s"].items()},
        }
        return report


async def _discard(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


def render(report: dict[str, Any]) -> str:
    args, latency = report["config"], report["latency_ms"]
    lines = [
        f"### {args['name']} ({report['date']})",
        "",
        "| measure | value |",
        "| --- | --- |",
        f"| site | {report['code']['rev']} {report['code']['commit'][:10]} |",
        f"| accepted | {report['accepted']:,} of {args['posts']:,} ({report['statuses']}) |",
        f"| what | {args.get('kind', 'publish')} |",
        f"| POSTs/s | {h.num(report['posts_per_s'])} over {args['concurrency']} connections |",
        f"| worker CPU per POST | {report['worker_cpu_ms_per_post']:.2f} ms ({report['worker_cores'] or 0:.2f} "
        "cores) |",
        f"| POST latency p50 / p99 / max | {latency['p50']:.1f} / {latency['p99']:.1f} / {latency['max']:.1f} ms |",
        f"| worker log problems | {sum(map(len, report['log_problems'].values()))} |",
    ]
    if profile := report.get("profile"):
        lines += ["", profile.get("error") or h.render_profile(profile)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(PublishApi, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
