"""`make run-cluster` keeps its workers: one that dies is started again, and the address keeps serving."""

import os
import queue
import signal
import subprocess
import threading

import httpx
import pytest

from tests.system.harness import PYTHON, ROOT, base_env, free_port, wait_for_port

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]


@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_worker_that_dies_is_restarted(site, redis_server, server):
    port = free_port()
    env = base_env(site["tmp"], REDIS_URL=redis_server.url)
    cluster = subprocess.Popen(
        [PYTHON, "-m", "livesite.cluster", "--workers", "2", "--port", str(port), "--server", server],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in cluster.stdout], daemon=True).start()

    def next_line(containing: str) -> str:
        while True:
            line = lines.get(timeout=30)
            if containing in line:
                return line

    try:
        first = int(next_line("worker 0 started").rsplit(" ", 1)[1])
        wait_for_port(port, cluster)
        # The port is the supervisor's: the first request waits in its queue until a worker has imported the
        # site and accepts, which took over 5 s on a loaded 2-core machine (45 s is the harness's start bound).
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=45).status_code == 200
        os.kill(first, signal.SIGKILL)
        assert f"pid {first}" in next_line("worker 0 (pid")
        second = int(next_line("worker 0 started").rsplit(" ", 1)[1])
        assert second != first
        for _ in range(20):  # both workers share the socket: each request may reach either
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        cluster.terminate()
        cluster.wait(timeout=20)
