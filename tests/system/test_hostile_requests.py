"""Requests that used to wedge or bloat a worker, against a real one (Daphne, and uvicorn where the guard is
livesite's own, realtime.servers.guard): each refused early, in JSON, while the worker's streams keep receiving."""

import asyncio
import contextlib
import json
import socket
import time

import httpx
import pytest

from tests.system.harness import SERVERS, SSEClient, publish, read_to_eof, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


def _raw(port: int, head: bytes, body: bytes = b"", *, timeout: float = 10.0) -> bytes:
    """Send a raw request (head, then body) and read until the server closes; returns what it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        if body:
            # Refused before the whole body was sent: what we want.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(body)
        return read_to_eof(sock, timeout)


def _answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# The body tests post to a Django view (DRF), which under uvicorn realtime.servers.guard covers, and to the bare
# real-time and like endpoints, which read their own bodies (realtime.http.aread_body): under Daphne its guard
# answers first, under uvicorn aread_body does. Every refusal closes the connection: `_raw` reads to EOF.
BODY_PATHS = [
    pytest.param("/api/videos/1/comments", "application/x-www-form-urlencoded", id="django"),
    pytest.param("/api/publish", "application/json", id="publish"),
    pytest.param("/api/videos/1/likes", "application/json", id="like"),
]


def _post_head(port: int, path: str, content_type: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture(params=SERVERS)
def worker(request, start_worker):
    return start_worker(server=request.param, REALTIME_REQUEST_DEADLINE_SECS="2")


@pytest.fixture
def daphne_worker(start_worker):
    """For what only Daphne's guard covers: the request line and headers, which Twisted reads."""
    return start_worker(REALTIME_REQUEST_DEADLINE_SECS="2")


@pytest.mark.parametrize(("path", "content_type"), BODY_PATHS)
async def test_a_declared_oversize_body_is_refused_before_it_is_sent(worker, path, content_type):
    head = _post_head(worker.port, path, content_type, 600_000_000)
    started = time.monotonic()
    status, body = _answer(await asyncio.to_thread(_raw, worker.port, head))
    assert status == 413
    assert body["code"] == "too_large"
    assert time.monotonic() - started < 2


async def test_a_big_form_body_is_cut_off_while_read_and_streams_keep_flowing(worker, tokens):
    form = b"a=b&" * 5_000_000  # 20 MB: Twisted used to parse it in the event loop (3 s frozen)
    head = (
        f"POST /api/videos/1/comments HTTP/1.1\r\nHost: 127.0.0.1:{worker.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(part), part) for part in (form[i : i + 65536] for i in range(0, len(form), 65536))
    )
    async with streams(SSEClient(worker.url, topics=["hostile.ticks"])) as (reader,):
        sending = asyncio.create_task(asyncio.to_thread(_raw, worker.port, head, chunked + b"0\r\n\r\n"))
        gaps = []
        last = time.monotonic()
        for n in range(20):
            await publish(worker.url, tokens["admin"], "hostile.ticks", "tick", {"n": n})
            await reader.next_event("tick", timeout=5)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        status, body = _answer(await sending)
    assert status == 413
    assert body["code"] == "too_large"
    assert max(gaps) < 1.0, gaps


def _trickle(port: int, head: bytes) -> bytes:
    """Send `head`, then one byte every 0.5 s for at most 4 s; returns what the server answered meanwhile, read
    to the end (the refusal closes the connection; its head and body may come in separate segments)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(8):
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
            sock.settimeout(0.5)
            try:
                if chunk := sock.recv(65536):
                    return chunk + read_to_eof(sock, 5)
            except TimeoutError:
                continue
        return b""


# Daphne only: uvicorn hands a request to the app once its headers are in, and has no timeout for headers
# that trickle in (its keep-alive timer runs only between requests), so no ASGI-level guard can see them;
# only the proxy in front (nginx's client_header_timeout) cuts them off there.
async def test_a_trickling_request_is_cut_off_at_the_deadline(daphne_worker):
    head = b"GET /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # then one header byte every 0.5 s
    started = time.monotonic()
    status, body = _answer(await asyncio.to_thread(_trickle, daphne_worker.port, head))
    assert status == 408
    assert body["code"] == "request_timeout"
    assert time.monotonic() - started < 3.5


@pytest.mark.parametrize(("path", "content_type"), BODY_PATHS)
async def test_a_trickling_body_is_cut_off_at_the_deadline(worker, path, content_type):
    head = _post_head(worker.port, path, content_type, 100)
    started = time.monotonic()
    status, body = _answer(await asyncio.to_thread(_trickle, worker.port, head))
    assert status == 408
    assert body["code"] == "request_timeout"
    assert time.monotonic() - started < 3.5


async def test_a_malformed_multipart_body_is_a_json_400(worker, tokens):
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{worker.url}/api/videos/1/comments",
            content=b"--nope\r\nnot a part",
            headers={"Content-Type": "multipart/form-data; boundary=xyz", "Authorization": f"Token {tokens['alice']}"},
        )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/json"
    assert response.json()["code"]


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (b"X-Big: " + b"a" * 20_000, 431, "header_too_large"),  # one line past Twisted's 16 KiB: was dropped
        (b"\r\n".join(b"X-H%d: %s" % (n, b"b" * 900) for n in range(20)), 400, "bad_request"),  # 18 KB in all
    ],
)
# Daphne only: these are Twisted's line and header limits. uvicorn (httptools) has none to answer in JSON: it
# took a 20 KB header line, 18 KB of headers and a 2 MB header line alike and answered 200 (December, uvicorn
# 0.54, httptools 0.9); only the proxy in front (nginx's large_client_header_buffers) bounds them there.
async def test_oversized_headers_are_answered_in_json(daphne_worker, header, status, code):
    worker = daphne_worker
    head = b"GET /api/videos HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n\r\n"
    answer, body = _answer(await asyncio.to_thread(_raw, worker.port, head))
    assert answer == status
    assert body["code"] == code
