"""The server adapters, with real Daphne and uvicorn processes: which write path is in use, and a clean stop."""

import asyncio

import httpx
import pytest
import redis.asyncio as aioredis
import requests

from tests.system.harness import SERVERS, SSEClient, eventually, publish, stats, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.mark.parametrize(("server", "writer"), [("daphne", "daphne-direct"), ("uvicorn", "uvicorn-direct")])
async def test_each_server_uses_its_own_write_path(redis_server, start_worker, tokens, server, writer):
    # Under the pinned Daphne and Twisted, and the pinned uvicorn (httptools), the direct path must be the one in
    # use: if an upgrade breaks one of the attributes it relies on, streams fall back to the queued writer (with
    # one warning in the log), and this fails.
    worker = start_worker(redis_server.url, server=server)
    async with streams(SSEClient(worker.url, topics=["servers.news"])) as (reader,):
        response = await publish(worker.url, tokens["admin"], "servers.news", "news.posted", {"n": 1})
        assert response.status_code == 202, response.text
        frame = await reader.next_event("news.posted", timeout=10)
        assert frame.json()["data"] == {"n": 1}
        assert (await stats(worker.url, tokens["admin"]))["writers"] == {writer: 1}


@pytest.mark.parametrize("server", SERVERS)
async def test_sigterm_ends_the_streams_and_withdraws_the_registrations(redis_server, start_worker, server):
    worker = start_worker(redis_server.url, server=server)
    store = aioredis.Redis.from_url(redis_server.url)
    key = "livesite:group:servers.stop"
    reader = SSEClient(worker.url, topics=["servers.stop"])
    try:
        await reader.connect()
        assert await store.zcard(key) == 1
        worker.process.terminate()
        # Not left to the lease (60 s): withdrawn while stopping.
        await eventually(lambda: _zero(store, key), timeout=15)
        # And the stream ended, so a client reconnects elsewhere.
        await asyncio.wait_for(reader.closed.wait(), 15)
        # uvicorn re-raises the signal once it has shut down cleanly (lifespan shutdown included).
        assert worker.process.wait(timeout=15) in (0, -15)
    finally:
        await reader.close()
        await store.aclose()


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize("library", ["httpx", "requests"])
async def test_sigterm_ends_each_stream_cleanly_for_every_client_library(start_worker, server, library):
    # A stream cut without its final chunk makes httpx and requests raise ("incomplete chunked read") instead
    # of reconnecting: the server must end the response, saying why, before it exits.
    worker = start_worker(server=server)
    url = f"{worker.url}/realtime/connect?topics=servers.bye"
    opened = asyncio.Event()
    loop = asyncio.get_running_loop()

    def read_with_requests() -> bytes:
        with requests.get(url, stream=True, timeout=(5, 30)) as response:
            body = b""
            for chunk in response.iter_content(chunk_size=None):
                body += chunk
                if b"event: connected" in body:
                    loop.call_soon_threadsafe(opened.set)
            return body

    async def read_with_httpx() -> bytes:
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(5, read=30)) as client,
            client.stream("GET", url) as response,
        ):
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
                if b"event: connected" in body:
                    opened.set()
            return body

    reader = asyncio.create_task(read_with_httpx() if library == "httpx" else asyncio.to_thread(read_with_requests))
    await asyncio.wait_for(opened.wait(), 10)  # attached to the worker
    worker.process.terminate()
    body = await asyncio.wait_for(reader, 20)  # raises if the library saw a broken stream
    assert b"event: connected" in body
    assert body.endswith(b'event: closing\ndata: {"reason": "shutdown"}\n\n')


async def _zero(store: aioredis.Redis, key: str) -> bool:
    return await store.zcard(key) == 0


@pytest.mark.parametrize("server", SERVERS)
async def test_the_stream_is_refused_for_a_host_outside_allowed_hosts(start_worker, server):
    worker = start_worker(server=server)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"{worker.url}/realtime/connect", headers={"Host": "evil.example"})
    assert response.status_code == 400
    assert response.json()["code"] == "disallowed_host"


async def test_a_token_client_opens_its_stream_with_a_single_use_ticket(start_worker, tokens, member_ids):
    worker = start_worker()
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{worker.url}/realtime/tickets", headers={"Authorization": f"Token {tokens['alice']}"}
        )
    assert response.status_code == 201, response.text
    ticket = response.json()["ticket"]
    # What an EventSource does: the ticket in the URL, no header.
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http:
        async with http.stream("GET", f"{worker.url}/realtime/connect", params={"ticket": ticket}) as stream:
            assert stream.status_code == 200, await stream.aread()
            async for line in stream.aiter_lines():
                if line.startswith("data: ") and "connection_id" in line:
                    assert f'"member_id": {member_ids["alice"]}' in line
                    break
        again = await http.get(f"{worker.url}/realtime/connect", params={"ticket": ticket})
    assert again.status_code == 401
    assert again.json()["code"] == "invalid_ticket"
