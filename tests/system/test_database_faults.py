"""PostgreSQL going away and coming back under like traffic, against a real worker.

The worker reaches the machine's PostgreSQL through a TCP proxy that the test cuts (every open connection
reset, new ones refused, as when the server restarts) and restores. While it is cut: likes and the REST API
answer 503 with Retry-After (never a 500, never a hang), /readyz names the database, streams stay open. Once
it is back: likes are accepted again without a restart, and every like answered 201 is stored exactly once,
counted, and announced to the open stream.
"""

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import psycopg
import pytest

from tests.system.conftest import USERS_SCRIPT
from tests.system.harness import SSEClient, base_env, eventually, free_port, run_django, streams
from tests.system.test_likes_e2e import VIDEOS_SCRIPT

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

PG_SERVER = "postgres://postgres@127.0.0.1:5432"


class CuttableProxy:
    """A TCP proxy to PostgreSQL that can be cut (connections reset, new ones refused) and restored."""

    def __init__(self, target_port: int = 5432) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None
        for writer in list(self.writers):
            writer.transport.abort()  # a reset, as a killed server's connections get
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, upstream_writer}

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await source.read(65536):
                    sink.write(chunk)
                    await sink.drain()
            sink.transport.abort()

        await asyncio.gather(pump(reader, upstream_writer), pump(upstream_reader, writer))
        self.writers -= {writer, upstream_writer}


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, dropped afterwards."""
    name = f"livesite_fault_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=10) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def proxy() -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy()
    await proxy.start()
    yield proxy
    if proxy.server is not None:
        await proxy.cut()


def _stored(database: str, video_id: int) -> tuple[int, int]:
    """(Like rows, like_count) of the video, read directly (not through the proxy)."""
    with psycopg.connect(f"{PG_SERVER}/{database}", connect_timeout=10) as db:
        rows = db.execute("SELECT COUNT(*) FROM likes_like WHERE video_id = %s", [video_id]).fetchone()
        count = db.execute("SELECT like_count FROM likes_livevideo WHERE id = %s", [video_id]).fetchone()
    assert rows is not None
    assert count is not None
    return rows[0], count[0]


async def test_postgresql_cut_and_restored_under_like_traffic(database, proxy, start_worker, tmp_path):
    direct = base_env(tmp_path, DATABASE_URL=f"{PG_SERVER}/{database}")
    run_django(direct, "from django.core.management import call_command; call_command('migrate', verbosity=0)")
    tokens = {name: member["token"] for name, member in json.loads(run_django(direct, USERS_SCRIPT)).items()}
    (video_id,) = json.loads(run_django(direct, VIDEOS_SCRIPT % 1))
    worker = start_worker(name="pg-fault", DATABASE_URL=f"postgres://postgres@127.0.0.1:{proxy.port}/{database}")
    topic = f"video.{video_id}.likes"
    headers = {"Authorization": f"Token {tokens['alice']}"}
    statuses: list[int] = []
    accepted: list[int] = []  # the totals answered with each 201

    async def like(api: httpx.AsyncClient) -> httpx.Response:
        started = time.monotonic()
        response = await api.post(f"/api/videos/{video_id}/likes", headers=headers)
        # Not a speed target: a refusal must come while the client still waits (the pool's 3 s, with room).
        assert time.monotonic() - started < 8, f"a like answered {response.status_code} only after 8 s"
        statuses.append(response.status_code)
        if response.status_code == 201:
            accepted.append(response.json()["count"])
        elif response.status_code == 503:
            assert response.json()["code"] == "database_unavailable", response.text
            assert int(response.headers["retry-after"]) >= 1
        return response

    async def until(status: int, api: httpx.AsyncClient, timeout: float) -> None:
        async def answered() -> bool:
            return (await like(api)).status_code == status

        await eventually(answered, timeout=timeout, interval=0.05)

    async with (
        streams(SSEClient(worker.url, topics=[topic])) as (viewer,),
        httpx.AsyncClient(base_url=worker.url, timeout=10) as api,
    ):
        for _ in range(20):
            assert (await like(api)).status_code == 201
        await proxy.cut()
        # Every connection gone and none to be had: clear refusals, at once, and a stream that stays open.
        await until(503, api, timeout=15)
        for _ in range(2):
            assert (await like(api)).status_code == 503
        # Many at once, as traffic comes: each is refused while its client still waits, none queues behind
        # the others' waits (Django runs sync views one at a time per process).
        started = time.monotonic()
        listed_all = await asyncio.gather(*(api.get("/api/videos") for _ in range(10)))
        waited = time.monotonic() - started
        for listed in listed_all:
            assert listed.status_code == 503, listed.text
            assert listed.json()["code"] == "database_unavailable"
        assert waited < 8, f"10 API requests at once took {waited:.1f} s to be refused"
        ready = await api.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] != "ok"
        assert not viewer.closed.is_set()

        await proxy.start()
        # Back without a restart: the worker's connections are opened again.
        await until(201, api, timeout=30)
        for _ in range(20):
            assert (await like(api)).status_code == 201
        assert (await api.get("/readyz")).status_code == 200
        assert (await api.get("/api/videos")).status_code == 200

        # Every like answered 201 is stored once, counted, and its total reached the stream.
        assert set(statuses) <= {201, 503}, f"only 201 and 503, never a 500: {sorted(set(statuses))}"
        assert sorted(accepted) == list(range(1, len(accepted) + 1)), "each total answered once, none skipped"
        assert await asyncio.to_thread(_stored, database, video_id) == (len(accepted), len(accepted))
        video = await api.get(f"/api/videos/{video_id}")
        assert video.json()["like_count"] == len(accepted)
        while True:
            frame = await viewer.next_event("like.created", timeout=5)
            if frame.json()["data"]["count"] == len(accepted):
                break
        assert not viewer.closed.is_set()
