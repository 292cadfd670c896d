"""Single-event publish POSTs through W workers that also hold the streams: one `POST /api/publish` per event.

    .venv/bin/python -m bench.publish_many                                  # Daphne, 2 workers, 2,000 streams
    .venv/bin/python -m bench.publish_many --server uvicorn --rates 3000,5000,6000
    .venv/bin/python -m bench.publish_many --server uvicorn --profile-rates 5000   # py-spy every worker at 5k/s

Its own redis-server and W workers (`--server daphne`: `python -m livesite.serve`, Daphne on uvloop; `uvicorn`:
uvicorn on uvloop with httptools, the same ASGI app), each holding N/W of N streams. Stream i reads its own topic
`bench.own.<i>` only, so every event has exactly one subscriber, on whichever worker holds it. Each step sends
rate x --step-secs single-event POSTs, event `seq` to `bench.own.<seq mod N>`, paced open-loop over
--publish-concurrency keep-alive connections spread over the workers: a POST lands on any worker, and the
dispatcher of that worker hands the event to the worker holding its stream (half the time another process).

The publisher is a process of its own (`client-publisher` in the CPU figures): raw asyncio protocols on
uvloop, each request pre-formatted bytes, each answer read only for its status and length, so its CPU per POST
is a few tens of microseconds (the harness' JSON client costs several times that, which on 2 shared cores is
capacity the servers lose). Events due while no connection is free wait for one (the wait shows as POST latency
"from due"); events still unsent at --max-lag x --step-secs are not sent. Per step: POSTs/s accepted, POST
latency from send and from when it was due, POST sent -> delivery latency, losses, CPU per process and server
CPU per POST (workers + redis-server).
"""

import argparse
import asyncio
import contextlib
import multiprocessing
import re
import signal
import sys
import time
from array import array
from collections import Counter, deque
from functools import partial
from pathlib import Path
from typing import Any, cast

import uvloop

from bench import harness as h
from bench.dispatch import profile_areas, redis_deltas, render_areas
from bench.loadclient import ClientProcess, die_with_parent, raise_nofile_limit

# Where a publishing worker's profiled samples go (bench.dispatch.profile_areas: first matching area anywhere on
# the stack, else the innermost frame's generic area).
AREAS = (
    ("authentication (realtime.auth: token cache, permission)", ("realtime/auth.py:",)),
    ("request JSON parsing (realtime.http.parse_json)", ("realtime/http.py:parse_json",)),
    ("body validation (realtime.bodies, policies)", ("realtime/bodies.py:", "realtime/policies.py:")),
    ("event build: id, JSON, SSE frame (build_event)", ("realtime/publishing.py:build_event",)),
    ("dispatch round (script, messages to workers)", ("realtime/dispatcher.py:Dispatcher._flush",)),
    ("answer (asend_json)", ("realtime/http.py:asend_json", "realtime/http.py:asend_error")),
    ("body read (aread_body)", ("realtime/http.py:aread_body",)),
    ("channel-layer receive and fan-out (worker)", ("realtime/worker.py:", "realtime/outbox.py:", "realtime/hub.py:")),
    ("request object, Host check, routing", ("realtime/http.py:", "livesite/asgi.py:", "realtime/context.py:")),
    ("publish endpoint itself", ("realtime/endpoints.py:publish",)),
)
GENERIC_AREAS = (
    ("Daphne / Twisted HTTP", ("daphne/", "twisted/")),
    ("uvicorn / httptools HTTP", ("uvicorn/", "httptools/")),
    ("Redis client (redis-py, channels-redis, msgpack)", ("redis/", "channels_redis/", "msgpack/")),
    ("Django (settings, auth backends)", ("django/",)),
    ("other realtime code", ("realtime/",)),
)
LOOP_FRAMES: tuple[str, ...] = (
    *("asyncio/", "twisted/internet/asyncioreactor.py", "daphne/server.py:Server.run", "daphne/cli.py"),
    *("uvicorn/server.py:Server.serve", "uvicorn/main.py", "uvicorn/server.py:Server.run"),
)
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--server", choices=h.SERVERS, default="daphne", help="the ASGI server of every worker (default daphne)")
    add("--workers", type=int, default=2, help="workers, each taking POSTs and holding streams (default 2)")
    add("--connections", type=int, default=2000, help="streams, one own topic each (default 2000)")
    add("--rates", default="2000,3000,4000,5000,6000", help="POSTs/s of each step (default 2k..6k)")
    add("--step-secs", type=float, default=10.0, help="seconds of publishing per step (default 10)")
    add("--publish-concurrency", type=int, default=64, help="keep-alive POST connections, over all workers")
    add("--max-lag", type=float, default=1.5, help="stop sending a step at this x --step-secs")
    add("--drain", type=float, default=15.0, help="max seconds to wait for a step's deliveries")
    add("--pause", type=float, default=1.0, help="seconds between steps")
    add("--clients", type=int, default=0, help="stream client processes (default: 1 per 19,000 streams)")
    add("--sources", type=int, default=0, help="source addresses 127.0.0.x (default: as needed)")
    add("--connect-concurrency", type=int, default=100, help="streams being opened at once")
    add("--connect-timeout", type=float, default=30.0, help="per stream, until 'connected'")
    add("--settle", type=float, default=2.0, help="seconds after connecting before publishing")
    add("--worker-env", action="append", default=[], metavar="NAME=VALUE", help="extra worker environment")
    add("--profile-rates", default="", help="py-spy record every worker during the steps at these rates")
    add("--profile-native", action="store_true", help="py-spy --native (C frames; pauses the workers)")
    h.add_common_options(parser, "publish-many-<server>-w<W>", 400.0)
    args = parser.parse_args(argv)
    try:
        args.rates = [float(rate) for rate in args.rates.split(",") if rate.strip()]
        args.profile_rates = [float(rate) for rate in args.profile_rates.split(",") if rate.strip()]
    except ValueError:
        parser.error("--rates and --profile-rates are comma-separated numbers")
    if not args.rates or min(args.rates) <= 0 or args.step_secs <= 0:
        parser.error("--rates must be positive numbers and --step-secs positive")
    if args.workers < 1 or args.connections < args.workers or args.publish_concurrency < args.workers:
        parser.error("--workers positive; --connections and --publish-concurrency at least --workers")
    if any("=" not in item for item in args.worker_env):
        parser.error("--worker-env takes NAME=VALUE")
    h.streams_and_sources(parser, args, args.connections, args.workers)
    args.name = args.name or f"publish-many-{args.server}-w{args.workers}"
    return args


class _PostConnection(asyncio.Protocol):
    """One keep-alive connection of the publisher: one request in flight, answers read for status and length."""

    def __init__(self, publisher: "Publisher", port: int) -> None:
        self.publisher, self.port = publisher, port
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.index = -1  # the POST in flight (its position in the step), or -1
        self.sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of asyncio.Transport

    def send(self, index: int, raw: bytes, now: float) -> None:
        assert self.transport is not None
        self.index, self.sent = index, now
        self.transport.write(raw)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end].lower()
            found = _CONTENT_LENGTH.search(head)
            total = end + 4 + (int(found.group(1)) if found else 0)
            if len(buffer) < total:
                break
            buffer = buffer[total:]
            self.publisher.answered(self, int(head[9:12]))
        self.buffer = buffer

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.publisher.lost(self)


class Publisher:
    """Open-loop single-event POSTs over keep-alive connections; events due while none is free wait for one."""

    def __init__(self, ports: list[int], connections: int, token: str, topics: int) -> None:
        self.ports, self.count, self.topics = ports, connections, topics
        self.token = token.encode()
        self.connections: list[_PostConnection] = []
        self.free: deque[_PostConnection] = deque()
        self.wake = asyncio.Event()
        self.step: dict[str, Any] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for index in range(self.count):
            port = self.ports[index % len(self.ports)]
            _, protocol = await loop.create_connection(partial(_PostConnection, self, port), "127.0.0.1", port)
            self.connections.append(protocol)
            self.free.append(protocol)

    def close(self) -> None:
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()

    def request(self, port: int, seq: int, now: float) -> bytes:
        body = b'{"topic":"bench.own.%d","type":"%s","data":{"seq":%d,"sent_at":%.6f}}' % (
            seq % self.topics,
            h.EVENT_TYPE.encode(),
            seq,
            now,
        )
        head = b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAuthorization: Token %s\r\n" % (port, self.token)
        return head + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    def answered(self, connection: _PostConnection, status: int) -> None:
        step, index = self.step, connection.index
        if index < 0 or not step:
            return
        step["post_s"][index] = time.time() - connection.sent
        step["answered_at"][index] = time.time()
        step["statuses"][str(status)] += 1
        if status == 202:
            step["accepted"][index] = 1
        connection.index = -1
        self.free.append(connection)
        self.wake.set()

    def lost(self, connection: _PostConnection) -> None:
        if connection.index >= 0 and self.step:
            self.step["statuses"]["connection lost"] += 1
        if connection in self.free:
            self.free.remove(connection)
        connection.index = -1
        self.wake.set()

    async def run(self, first_seq: int, count: int, rate: float, give_up: float, budget: float) -> dict[str, Any]:
        """Send POSTs for events first_seq.. at `rate`/s; the step's record once every sent one is answered."""
        loop = asyncio.get_running_loop()
        zeros = bytes(8 * count)
        step = self.step = {
            "sent_at": array("d", zeros),
            "due_at": array("d", zeros),
            "post_s": array("d", zeros),
            "answered_at": array("d", zeros),
            "accepted": bytearray(count),
            "statuses": Counter[str](),
        }
        start_loop, start_wall = loop.time() + 0.05, time.time() + 0.05
        sent = 0
        while sent < count:
            now = loop.time()
            if now > start_loop + give_up:
                break
            due = min(count, int((now - start_loop) * rate) + 1) if now >= start_loop else 0
            while sent < due and self.free:
                connection = self.free.popleft()
                assert connection.transport is not None
                wall = time.time()
                step["sent_at"][sent], step["due_at"][sent] = wall, start_wall + sent / rate
                connection.send(sent, self.request(connection.port, first_seq + sent, wall), wall)
                sent += 1
            if sent >= count:
                break
            if sent < due:
                self.wake.clear()
                if not self.connections or all(c.transport is None for c in self.connections):
                    raise h.BenchError("every publisher connection was closed by the workers")
                await asyncio.wait_for(self.wake.wait(), budget)
            else:
                await asyncio.sleep(max(0.0, start_loop + sent / rate - loop.time()))
        ended = loop.time() + budget
        while any(c.index >= 0 for c in self.connections if c.transport is not None) and loop.time() < ended:
            self.wake.clear()
            await asyncio.wait_for(self.wake.wait(), budget)
        self.step = {}
        arrays = {key: value.tobytes() for key, value in step.items() if isinstance(value, array)}
        return (
            step
            | arrays
            | {"accepted": bytes(step["accepted"]), "statuses": dict(step["statuses"])}
            | {
                "sent": sent,
                "start_wall": start_wall,
            }
        )


def publisher_main(pipe: Any, config: dict[str, Any]) -> None:
    """Entry point of the publisher process: ("run", first_seq, count, rate, give_up, budget) -> ("done", record)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops us by PID
    raise_nofile_limit()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    publisher = Publisher(config["ports"], config["connections"], config["token"], config["topics"])
    try:
        loop.run_until_complete(publisher.open())
        pipe.send(("ready",))
        while (command := pipe.recv())[0] == "run":
            pipe.send(("done", loop.run_until_complete(publisher.run(*command[1:]))))
    except EOFError:
        pass  # The parent closed the pipe: the run is over.
    except (OSError, h.BenchError, TimeoutError) as exc:
        with contextlib.suppress(OSError):
            pipe.send(("failed", repr(exc)))
    finally:
        publisher.close()


class PublisherProcess(ClientProcess):
    """The parent's side of the publisher process (a client process with another entry point)."""

    def __init__(self, config: dict[str, Any], name: str = "client-publisher") -> None:
        context = multiprocessing.get_context("spawn")
        self.name = name
        self.pipe, child = context.Pipe()
        self.process = context.Process(target=publisher_main, args=(child, config), name=f"bench-{name}", daemon=True)
        self.process.start()
        child.close()

    async def run(self, *args: Any, timeout: float) -> dict[str, Any]:
        self.pipe.send(("run", *args))
        reply = await self.recv(timeout)
        if reply[0] != "done":
            raise h.BenchError(f"the publisher failed: {reply!r}")
        record: dict[str, Any] = reply[1]
        for key in ("sent_at", "due_at", "post_s", "answered_at"):
            record[key] = array("d", record[key])
        return record


class PublishMany(h.Harness):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args, prefix="bench-publish-many-")
        self.publisher: PublisherProcess | None = None
        self.total_events = sum(int(rate * args.step_secs) for rate in args.rates)

    def start_workers(self, count: int, env: dict[str, str], **where: Any) -> list[h.Managed]:
        """The harness's workers (Daphne, or uvicorn with --server), with --worker-env; quiet logs under uvicorn."""
        env = env | dict(item.split("=", 1) for item in self.args.worker_env)
        if self.args.server == "uvicorn":
            env |= {"LOG_LEVEL": "WARNING"}
        return super().start_workers(count, env, **where)

    async def main(self) -> dict[str, Any]:
        args, report = self.args, self.report
        report["server"] = args.server
        await self.start_site(args.workers)
        await self.warm_up(self.workers, publishes=3, streams=True)

        def request(index: int) -> bytes:
            return self.stream_request([f"bench.own.{index}"])

        shares = self.spread(self.workers, args.connections, args.clients, args.sources, request)
        config = {"concurrency": args.connect_concurrency, "connect_timeout": args.connect_timeout}
        report["connect"], _samples = await self.open_streams(shares, **config)
        await self.ask_all(("expect", self.total_events), 60)
        ports = [worker.port for worker in self.workers]
        config = {"ports": ports, "connections": args.publish_concurrency, "token": self.token}
        self.publisher = publisher = PublisherProcess(config | {"topics": args.connections})
        if (reply := await publisher.recv(self.remaining(60)))[0] != "ready":
            raise h.BenchError(f"the publisher said {reply!r}")
        # Warm the publish path of every worker (and the token cache) through the publisher's own connections.
        warmup = 4 * args.publish_concurrency
        warm = await publisher.run(self.total_events, warmup, 1e6, 30.0, 30.0, timeout=self.remaining(60))
        if warm["statuses"].get("202", 0) != warmup:
            raise h.BenchError(f"warm-up POSTs were refused: {warm['statuses']}")
        steps, first_seq = [], 0
        try:
            for rate in args.rates:
                count = int(rate * args.step_secs)
                print(f"step: {rate:g} POSTs/s for {args.step_secs:g} s ({count:,} events) ...", file=sys.stderr)
                profiles = []
                if rate in args.profile_rates:
                    options = {"native": args.profile_native, "tag": f"-r{rate:g}"}
                    profiles = self.start_profiles(self.workers, max(1, int(args.step_secs)), **options)
                redis_before, before = await self.redis_commands(), self.snapshot()
                give_up, budget = args.step_secs * args.max_lag, self.remaining(60)
                sent = await publisher.run(first_seq, count, rate, give_up, budget, timeout=budget + give_up)
                posted = self.snapshot()
                accepted = sum(sent["accepted"])
                done = lambda statuses, target=accepted: sum(s["received"] for s in statuses) >= target  # noqa: E731
                drained = await self.drain(done, args.drain)
                step = {"rate": rate, "first_seq": first_seq, "count": count, "sent": sent, "drain": drained}
                step["cpu"] = h.cpu_deltas(before, posted)
                step["redis"] = redis_deltas(redis_before, await self.redis_commands())
                if profiles:
                    step["profiles"] = await self.finish_profiles(profiles, summarise)
                steps.append(step)
                # The clients' tallies are cumulative over steps: this step's events are first_seq..+count.
                first_seq += count
                self.check_alive()
                await asyncio.sleep(min(args.pause, self.remaining()))
        finally:
            publisher.stop()
            self.publisher = None
        self.finish()
        results = await self.ask_all(("stop",), 120)
        report["steps"] = [evaluate(step, results) for step in steps]
        report["clients"] = [{key: result[key] for key in ("max_rss_kb", "cpu_s", "lost")} for result in results]
        return report

    def stop_processes(self, keep_redis: bool = False) -> None:
        if (publisher := self.publisher) is not None:
            publisher.stop()
        super().stop_processes(keep_redis)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        readings = super().snapshot()
        if (publisher := self.publisher) is not None:
            readings[publisher.name] = h.sample(publisher.pid)
        return readings

    async def redis_commands(self) -> dict[str, dict[str, float]]:
        import redis.asyncio as aioredis

        client = aioredis.Redis(host="127.0.0.1", port=self.redis[0].port)
        try:
            stats = await asyncio.wait_for(client.info("commandstats"), self.remaining(10))
        finally:
            await client.aclose()
        return {name[8:]: {"calls": float(v["calls"]), "usec": float(v["usec"])} for name, v in stats.items()}


def evaluate(step: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, Any]:
    """POST and delivery figures of one step, from the publisher's record and the clients' per-event records."""
    sent, first_seq = step.pop("sent"), step["first_seq"]
    count = sent["sent"]
    delivered, last = [0] * count, [0.0] * count
    for result in results:
        result_last = array("d", result["last"])
        for index in range(count):
            if n := result["counts"][first_seq + index]:
                delivered[index] += n
                last[index] = max(last[index], result_last[first_seq + index])
    accepted = [index for index in range(count) if sent["accepted"][index]]
    first = sent["sent_at"][0] if count else 0.0
    answered_end = max((sent["answered_at"][i] for i in range(count)), default=first)
    window = max(step["count"] / step["rate"], answered_end - sent["start_wall"])
    complete = [index for index in accepted if delivered[index] >= 1]
    step |= {
        "sent_posts": count,
        "not_sent": step["count"] - count,
        "statuses": dict(sent["statuses"]),
        "accepted_posts": len(accepted),
        "accepted_per_s": len(accepted) / window if window > 0 else None,
        "window_s": window,
        "post_latency_s": h.percentiles(sent["post_s"][i] for i in range(count)),
        "post_latency_from_due_s": h.percentiles(sent["answered_at"][i] - sent["due_at"][i] for i in range(count)),
        "delivery_latency_s": h.percentiles(last[i] - sent["sent_at"][i] for i in complete),
        "lost": len(accepted) - len(complete),
        "over_delivered": sum(max(0, delivered[i] - 1) for i in range(count)),
    }
    cpu = step["cpu"]
    server = sum(value for name, value in cpu.items() if re.fullmatch(r"w\d+|redis", name))
    step["server_cpu_per_post_ms"] = server / len(accepted) * 1000 if accepted else None
    step["met"] = bool(
        accepted
        and step["not_sent"] == 0
        and len(accepted) == count
        and step["lost"] == 0
        and (step["accepted_per_s"] or 0) >= 0.98 * step["rate"]
        and (step["post_latency_s"]["p99"] or 1) < 0.1
    )
    return step


def summarise(path: Path) -> dict[str, Any]:
    return {
        "all_threads": h.summarise_profile(path, 30, main_thread_only=False),
        "areas": profile_areas(path, AREAS, GENERIC_AREAS, LOOP_FRAMES),
    }


def render(report: dict[str, Any]) -> str:
    args, cores, conn = report["config"], report["machine"]["nproc"], report["connect"]
    lines = [
        f"### {args['name']} ({report['stamp']})",
        "",
        f"`uptime` before: `{report['uptime_start']}`; after: `{report['uptime_end']}`. Code: {h.code_label(report)}. "
        f"Server: {report['server']}.",
        "",
        f"{conn['held']:,} of {conn['requested']:,} streams held on {args['workers']} workers (errors: "
        f"{conn['errors'] or 'none'}), each on its own topic. Single-event POSTs over {args['publish_concurrency']} "
        f"keep-alive connections spread over the workers; {args['step_secs']:g} s per step.",
        "",
        "| target POSTs/s | sent / accepted (202) | accepted POSTs/s | POST p50 / p99 / max ms | POST from due p99 ms "
        "| POST sent -> delivered p50 / p99 / max ms | lost | server CPU per POST | CPU server / client (s) | "
        "met (p99 < 100 ms, all accepted at rate) |",
        "| ---: | --- | ---: | --- | ---: | --- | ---: | ---: | --- | --- |",
    ]
    for step in report["steps"]:
        post, due, delivery = step["post_latency_s"], step["post_latency_from_due_s"], step["delivery_latency_s"]
        behind = f" ({step['not_sent']:,} not sent)" if step["not_sent"] else ""
        refused = {k: v for k, v in step["statuses"].items() if k != "202"}
        server, client = h.cpu_split(step["cpu"])
        per_post = step["server_cpu_per_post_ms"]
        lines.append(
            f"| {step['rate']:,.0f} | {step['sent_posts']:,} / {step['accepted_posts']:,}{behind}"
            f"{f' {refused}' if refused else ''} | {h.num(step['accepted_per_s'])} | {h.ms(post['p50'])} / "
            f"{h.ms(post['p99'])} / {h.ms(post['max'])} | {h.ms(due['p99'])} | {h.ms(delivery['p50'])} / "
            f"{h.ms(delivery['p99'])} / {h.ms(delivery['max'])} | {step['lost']:,} | "
            f"{'-' if per_post is None else f'{per_post * 1000:.0f} µs'} | {server:.1f} / {client:.1f} | "
            f"{'yes' if step['met'] else 'no'} |"
        )
    lines += ["", "CPU per step, while publishing (seconds, per process; `bench` is the publisher):", ""]
    lines += [f"- {s['rate']:,.0f}/s: {h.cpu_line(s['cpu'], cores)}" for s in report["steps"]]
    if top := report["steps"][-1]["redis"]["commands"]:
        commands = ", ".join(f"{name} {value['calls']:,.0f}" for name, value in list(top.items())[:8])
        lines += ["", f"Redis commands in the last step (publishing and drain): {commands}"]
    for step in report["steps"]:
        for profile in step.get("profiles", []):
            lines += [
                "",
                f"py-spy {profile['worker']} at {step['rate']:g}/s: {profile.get('error', profile.get('path'))}",
            ]
            if "areas" in profile:
                lines += ["", render_areas(profile["areas"]), "", h.render_profile(profile["all_threads"])]
    if report.get("log_problems"):
        lines += ["", f"worker log problems: {str(report['log_problems'])[:2000]}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return h.run(PublishMany, parse_args(argv), render)


if __name__ == "__main__":
    sys.exit(main())
