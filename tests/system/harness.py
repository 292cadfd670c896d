"""Real processes for system tests: redis-server and Daphne workers on free ports, and an SSE client."""

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from livesite import devredis

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
# The production entry point: Daphne's own command line, on uvloop (livesite/serve.py).
DAPHNE = [PYTHON, "-m", "livesite.serve"]
# The other supported server, with its lifespan (the worker's start and clean stop) and a bounded graceful
# shutdown: uvicorn waits for open responses, and a stream never ends by itself.
UVICORN = [PYTHON, "-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--lifespan", "on"]
UVICORN += ["--timeout-graceful-shutdown", "2", "--no-access-log"]
# As deploy/systemd/uvicorn.conf runs it: idle connections kept past nginx's, X-Forwarded-* left to the site.
UVICORN += ["--timeout-keep-alive", "75", "--no-proxy-headers"]
SERVERS = ("daphne", "uvicorn")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process {process.args} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed, and CI must run the system tests")
        pytest.skip(
            "SKIPPED LOUDLY: redis-server is not installed; system tests need it (apt-get install redis-server)"
        )
    return path


class RedisServer:
    """A private redis-server on a free port (livesite/devredis.py), so tests can stop it without disturbing
    anything else."""

    def __init__(self) -> None:
        self.port = devredis.free_port()
        self.server: devredis.RedisProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def process(self) -> subprocess.Popen | None:
        return self.server.process if self.server else None

    def start(self) -> "RedisServer":
        require_redis_server()
        self.server = devredis.start(self.port)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class Worker:
    """One `daphne livesite.asgi:application` process (or uvicorn's) on a free port."""

    def __init__(self, env: dict[str, str], name: str = "worker", server: str = "daphne") -> None:
        self.port = free_port()
        self.env = env
        self.name = name
        self.server = server
        self.process: subprocess.Popen | None = None
        self.log_path = Path(env["LIVESITE_TEST_DIR"]) / f"{name}-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Worker":
        self.log = self.log_path.open("ab")
        if self.server == "daphne":
            command = [*DAPHNE, "-b", "127.0.0.1", "-p", str(self.port), "livesite.asgi:application"]
        else:
            command = [*UVICORN, "--host", "127.0.0.1", "--port", str(self.port), "livesite.asgi:application"]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            # Generous: a worker imports Django and the whole site; on a loaded 2-core machine that took over 20 s.
            wait_for_port(self.port, self.process, timeout=45.0)
        except BaseException:
            self.stop()  # never leave a half-started worker behind: nobody else holds it to stop it
            raise
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def run_django(env: dict[str, str], code: str) -> str:
    """Run Python with Django set up against the test database; returns its stdout."""
    script = "import django; django.setup()\n" + code
    result = subprocess.run(
        [PYTHON, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout


def base_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("REALTIME_", "PRESENCE_", "LIKES_", "REDIS_", "DATABASE_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="livesite.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        LIVESITE_TEST_DIR=str(tmp),
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
        # The test deployment's own namespaces, open to API publishers (realtime.policies): the apps declare
        # video.*, presence.*, member.* and census.* themselves.
        REALTIME_OPEN_NAMESPACES="news,t,big,fault,servers,hostile",
        # Tests act faster than members; tests/system/test_limits.py sets the rates it checks.
        REALTIME_RATE_LIMITS="connect=0,subscribe=0,publish=0,like=0,comment=0,sign_in=0",
        # Many streams from 127.0.0.1 by design: tests/system/test_limits.py sets the caps it checks.
        REALTIME_MAX_STREAMS_PER_ADDRESS="0",
        REALTIME_MAX_STREAMS_PER_MEMBER="0",
    )
    env.update(overrides)
    return env


@dataclass
class Frame:
    event: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)

    @property
    def event_id(self) -> str:
        """The published event's id (the SSE `id:` line is its position in the topic's history)."""
        return str(self.json()["id"])


class SSEClient:
    """A real HTTP client on one SSE stream, parsing frames as the EventSource spec says."""

    def __init__(
        self, base_url: str, *, topics: list[str] | None = None, headers: dict | None = None, since: str = ""
    ) -> None:
        self.base_url = base_url
        self.topics = topics or []
        self.since = since
        self.headers = headers or {}
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()
        self.comments = 0
        self.retry: int | None = None
        self.response: httpx.Response | None = None
        self.connection_id = ""
        self.closed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))

    async def __aenter__(self) -> "SSEClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Frame:
        params = {"topics": ",".join(self.topics)} if self.topics else {}
        if self.since:
            params["since"] = self.since
        request = self._client.build_request(
            "GET", f"{self.base_url}/realtime/connect", params=params, headers=self.headers
        )
        self.response = await self._client.send(request, stream=True)
        if self.response.status_code != 200:
            await self.response.aread()
            raise AssertionError(f"stream refused: {self.response.status_code} {self.response.text}")
        self._task = asyncio.create_task(self._read())
        hello = await self.next_frame(timeout=10)
        assert hello.event == "connected", hello
        self.connection_id = hello.json()["connection_id"]
        return hello

    async def _read(self) -> None:
        event, data, event_id = "message", [], None
        try:
            async for line in self.response.aiter_lines():
                if line == "":
                    if data:
                        await self.frames.put(Frame(event, "\n".join(data), event_id))
                    event, data, event_id = "message", [], None
                elif line.startswith(":"):
                    self.comments += 1
                else:
                    field, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if field == "data":
                        data.append(value)
                    elif field == "event":
                        event = value
                    elif field == "id":
                        event_id = value
                    elif field == "retry":
                        self.retry = int(value)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()

    async def next_frame(self, timeout: float = 5.0) -> Frame:
        return await asyncio.wait_for(self.frames.get(), timeout)

    async def next_event(self, event_type: str | None = None, timeout: float = 5.0) -> Frame:
        """The next frame (of `event_type`, skipping others); fails after `timeout` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            frame = await asyncio.wait_for(self.frames.get(), max(remaining, 0.001))
            if event_type is None or frame.event == event_type:
                return frame

    async def assert_no_frame(self, within: float) -> None:
        """Passes if no frame arrives within `within` seconds (a bounded wait for an absence)."""
        with contextlib.suppress(TimeoutError):
            frame = await asyncio.wait_for(self.frames.get(), within)
            raise AssertionError(f"unexpected frame {frame}")

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.response is not None:
            await self.response.aclose()
        await self._client.aclose()


async def subscribe(
    base_url: str,
    connection_id: str,
    topics: list[str],
    *,
    method: str = "POST",
    headers: dict | None = None,
    since: dict | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"connection_id": connection_id, "topics": topics}
    if since is not None:
        body["since"] = since
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.request(method, f"{base_url}/realtime/subscriptions", json=body, headers=headers or {})


async def publish(base_url: str, token: str, topic: str, event_type: str, data: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            f"{base_url}/api/publish",
            json={"topic": topic, "type": event_type, "data": data},
            headers={"Authorization": f"Token {token}"},
        )


async def stats(base_url: str, token: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(f"{base_url}/realtime/stats", headers={"Authorization": f"Token {token}"})
        response.raise_for_status()
        return response.json()


async def eventually(check: Any, *, timeout: float, interval: float = 0.1) -> Any:
    """Poll an async `check` until it returns a truthy value: for state with no event to await (Redis TTLs)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def streams(*clients: SSEClient) -> AsyncIterator[tuple[SSEClient, ...]]:
    try:
        for client in clients:
            await client.connect()
        yield clients
    finally:
        for client in clients:
            await client.close()


def read_to_eof(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Everything a raw socket receives until the server closes it (EOF, or a reset)."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)
