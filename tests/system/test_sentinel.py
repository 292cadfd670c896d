"""Redis behind Sentinel: the primary is killed under a steady publish load and a replica takes over.

A primary, a replica and 3 sentinels on free ports (a failover took 1.6-22 s here: the sentinels elect a
leader first, and a split vote waits for the next round); two Daphne workers with REDIS_URL=sentinel://... While
there is no primary, publishes answer 503 (never a 500, never a hang); after the failover they are accepted
again without a restart, the open streams stay open, subscriptions work, and every event accepted with a 202
reaches the stream (history fills the holes), or the count of those that did not is in the failure.
"""

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from livesite import devredis
from tests.system.harness import SSEClient, publish, require_redis_server, streams, subscribe

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

MASTER = "livesite-primary"
DOWN_AFTER_MS = 1000


class Node:
    """One redis-server process (a data node or a sentinel) on a free port, stopped by its PID."""

    def __init__(self, args: list[str], port: int) -> None:
        self.port = port
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not devredis.answers(port, timeout=0.5):
            assert self.process.poll() is None, f"redis-server on {port} exited with {self.process.returncode}"
            assert time.monotonic() < deadline, f"redis-server on {port} did not answer"
            time.sleep(0.05)

    def command(self, *args: str) -> bytes:
        return devredis.command(self.port, *args)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        devredis.stop_process(self.process)


def data_node(tmp: Path, replica_of: int | None = None) -> Node:
    port = devredis.free_port()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp)]
    if replica_of is not None:
        args += ["--replicaof", "127.0.0.1", str(replica_of)]
    return Node(args, port)


def sentinel_node(tmp: Path, primary: int) -> Node:
    port = devredis.free_port()
    config = tmp / f"sentinel-{port}.conf"  # a sentinel rewrites its own file: one each
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
        f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )
    return Node(["redis-server", str(config), "--sentinel"], port)


def master_info(sentinel: Node) -> dict[str, str]:
    reply = subprocess.run(
        ["redis-cli", "-p", str(sentinel.port), "sentinel", "master", MASTER],
        capture_output=True,
        text=True,
        check=True,
        timeout=5,
    ).stdout.split("\n")
    return dict(zip(reply[0::2], reply[1::2], strict=False))


@pytest.fixture
def sentinel_cluster(tmp_path: Path) -> Iterator[dict]:
    require_redis_server()
    nodes: list[Node] = []
    try:
        primary = data_node(tmp_path)
        nodes.append(primary)
        replica = data_node(tmp_path, replica_of=primary.port)
        nodes.append(replica)
        sentinels = [sentinel_node(tmp_path, primary.port) for _ in range(3)]
        nodes.extend(sentinels)
        # Ready for a failover only once every sentinel sees the replica and the two other sentinels.
        deadline = time.monotonic() + 30
        while not all(
            info.get("num-slaves") == "1" and info.get("num-other-sentinels") == "2"
            for info in (master_info(sentinel) for sentinel in sentinels)
        ):
            assert time.monotonic() < deadline, [master_info(sentinel) for sentinel in sentinels]
            time.sleep(0.2)
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
        yield {"url": f"sentinel://{hosts}/{MASTER}", "primary": primary, "replica": replica, "sentinels": sentinels}
    finally:
        for node in reversed(nodes):
            node.stop()


async def _publisher(url: str, token: str, topic: str, log: list[tuple[int, int]], stop: asyncio.Event) -> None:
    """One publish every 50 ms until stopped (bounded: at most 1,200): (n, status) each; 0 for a timeout."""
    async with httpx.AsyncClient(timeout=5) as http:
        for n in range(1200):
            if stop.is_set():
                return
            try:
                response = await http.post(
                    f"{url}/api/publish",
                    json={"topic": topic, "type": "tick", "data": {"n": n}},
                    headers={"Authorization": f"Token {token}"},
                )
                log.append((n, response.status_code))
            except httpx.TimeoutException:
                log.append((n, 0))
            await asyncio.sleep(0.05)


async def test_a_failover_under_publish_load_loses_nothing_accepted(sentinel_cluster, start_worker, tokens):
    url = sentinel_cluster["url"]
    a = start_worker(url, name="a")
    b = start_worker(url, name="b")
    topic = "fault.sentinel"
    async with streams(SSEClient(a.url, topics=[topic]), SSEClient(b.url)) as (reader, other):
        log: list[tuple[int, int]] = []
        stop = asyncio.Event()
        sender = asyncio.create_task(_publisher(b.url, tokens["admin"], topic, log, stop))
        received: set[int] = set()
        gaps: list[dict] = []

        async def read_until(predicate, timeout: float) -> bool:
            """Collect the reader's frames until `predicate()` holds (True) or `timeout` passes (False)."""
            deadline = asyncio.get_running_loop().time() + timeout
            while not predicate():
                if asyncio.get_running_loop().time() > deadline:
                    return False
                try:  # a short wait: the predicate may turn on the publisher's log, with no frame to wake us
                    frame = await reader.next_frame(timeout=0.1)
                except TimeoutError:
                    continue
                if frame.event == "tick":
                    received.add(frame.json()["data"]["n"])
                elif frame.event == "gap":
                    gaps.append(frame.json())
            return True

        try:
            assert await read_until(lambda: len(received) >= 10, timeout=10)
            sentinel_cluster["primary"].kill()
            killed_at = time.monotonic()
            # Publishes fail clearly while there is no primary, then succeed again on their own.
            assert await read_until(lambda: any(status == 503 for _, status in log), timeout=15), "no 503"
            first_503 = next(n for n, status in log if status == 503)
            resumed = await read_until(lambda: any(n > first_503 and status == 202 for n, status in log), timeout=60)
            assert resumed, f"publishes did not recover: {log[-10:]}"
            recovered_after = time.monotonic() - killed_at
            promoted = master_info(sentinel_cluster["sentinels"][0])["port"]
            assert promoted == str(sentinel_cluster["replica"].port)
            resumed_at = len(log)
            assert await read_until(lambda: len(log) >= resumed_at + 20, timeout=15)
        finally:
            stop.set()
            await sender
        statuses = {status for _, status in log}
        assert statuses <= {202, 503}, f"only 202 and 503, never a 500 or a hang: {sorted(statuses)}"
        accepted = {n for n, status in log if status == 202}
        # Everything accepted reaches the open stream: resumed from the history the replica holds.
        await read_until(lambda: accepted <= received, timeout=10)
        lost = sorted(accepted - received)
        print(  # noqa: T201 - the figure the issue asks for, in the test's output
            f"failover: publishes accepted again {recovered_after:.1f} s after the kill; "
            f"{len(accepted)} accepted, {sum(1 for _, s in log if s == 503)} answered 503, "
            f"{len(lost)} accepted but not delivered, gap frames: {gaps}"
        )
        assert not reader.closed.is_set(), "the reader's stream was closed by the failover"
        assert not other.closed.is_set(), "the other stream was closed by the failover"
        # The target: after the failover, nothing accepted is lost. The new primary's replica may lack
        # the old primary's last positions (replication is asynchronous); it starts a new epoch rather than give
        # them again, so the first event it accepts is delivered after a `gap`, never taken for a duplicate.
        after_failover = sorted(n for n in lost if n > first_503)
        assert not after_failover, f"{after_failover[:20]} accepted after the failover and not delivered"
        # An event the old primary accepted in its last instant, before replicating it, can be lost with it
        # (unless Redis WAIT is used): never silently, a `gap` on its topic says so (the client refetches).
        if lost:
            assert {"topics": [topic]} in gaps, f"{lost[:20]} accepted, not delivered, and no gap said so"
        # Everything works again: a new subscription on the other worker's stream, and its events.
        response = await subscribe(a.url, other.connection_id, ["fault.after-failover"])
        assert response.status_code == 200, response.text
        assert (await publish(a.url, tokens["admin"], "fault.after-failover", "tick", {"n": 0})).status_code == 202
        assert (await other.next_event("tick", timeout=5)).json()["topic"] == "fault.after-failover"
