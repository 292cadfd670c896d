"""The uvicorn adapter (realtime.servers.uvicorn) inside a real uvicorn server, on raw sockets.

Each scenario runs uvicorn's `Server.serve` in its own loop (uvloop, as the workers run, and asyncio's) with a
tiny ASGI app that opens a chunked response and hands its stream writer to the test, which then writes to it
as the fan-out does and reads the bytes off the wire: exact chunk framing, order kept across a pause, the
bounded backlog, the end of the response (uvicorn's own state kept: the connection serves the next request),
and the abort of a reader that never drains.
"""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest
import uvicorn
import uvloop

from realtime import servers
from realtime.http import Receive, Scope, Send
from realtime.hub import Payload, body
from realtime.servers import uvicorn as adapter
from realtime.servers.queued import QueuedWriter

HELLO = b": hello\n\n"
HEAD_END = b"\r\n\r\n"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def run(loop: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(scenario(), 30))


class Site:
    """A uvicorn server whose every request opens a stream; the writers come out of `opened`, in order."""

    def __init__(self, http: str = "httptools", *, max_pending: int = 5, send_buffer: int = 0) -> None:
        self.opened: asyncio.Queue[Any] = asyncio.Queue()
        self.max_pending = max_pending
        self.send_buffer = send_buffer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, http=http, interface="asgi3", lifespan="off", log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if self.send_buffer:
            # The kernel would otherwise take megabytes (tcp_wmem) before uvicorn's flow control pauses.
            cycle: Any = getattr(send, "__self__", None)
            cycle.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.send_buffer)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send(body(HELLO))
        self.opened.put_nowait(servers.stream_writer(send, max_pending=self.max_pending))
        while (await receive())["type"] != "http.disconnect":
            pass

    async def __aenter__(self) -> "Site":
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        # uvicorn offers no start event: poll, for at most 10 s, and fail at once if serve() ended.
        for _ in range(1000):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.01)
        if not self.server.started:
            if self.task.done():
                self.task.result()  # serve()'s own error, if it raised one
            raise AssertionError("uvicorn did not start within 10 s")
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        if self.task is not None:
            await self.task
        self.sock.close()

    async def connect(self, *, receive_buffer: int = 0) -> socket.socket:
        client = socket.socket()
        if receive_buffer:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", self.port))
        return client


def request(port: int) -> bytes:
    return f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()


async def read_until(client: socket.socket, done: Callable[[bytes], bool], seen: bytes = b"") -> bytes:
    loop = asyncio.get_running_loop()
    while not done(seen):
        chunk = await loop.sock_recv(client, 65536)
        assert chunk, f"the server closed the connection after {len(seen)} bytes: {seen[-200:]!r}"
        seen += chunk
    return seen


async def open_stream(site: Site, client: socket.socket) -> tuple[Any, bytes]:
    """Request a stream on `client`: its writer, and what has been read (headers and the first chunk)."""
    await asyncio.get_running_loop().sock_sendall(client, request(site.port))
    writer = await site.opened.get()
    seen = await read_until(client, lambda seen: seen.endswith(Payload(HELLO).framed))
    head = seen.partition(HEAD_END)[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head.lower()
    return writer, seen.partition(HEAD_END)[2]


def payloads(count: int, size: int, first: int = 0) -> list[Payload]:
    return [Payload(b"data: %d %b\n\n" % (first + n, b"x" * size)) for n in range(count)]


async def until(condition: Callable[[], bool], step: Callable[[], Awaitable[object]], limit: int) -> None:
    for _ in range(limit):
        if condition():
            return
        await step()
    raise AssertionError("the condition never held")


@pytest.mark.parametrize("loop", LOOPS)
def test_payloads_go_straight_to_the_socket_and_the_end_leaves_the_connection_usable(loop: str) -> None:
    async def scenario() -> None:
        async with Site() as site:
            client = await site.connect()
            try:
                writer, seen = await open_stream(site, client)
                assert isinstance(writer, adapter.UvicornWriter)
                assert writer.kind == "uvicorn-direct"
                sent = payloads(3, 10)
                assert all(writer.write(payload) for payload in sent)
                assert writer.pending is None
                assert writer.resuming is None
                writer.end(b"event: closing\n\n")
                await writer.aended()
                assert not writer.write(Payload(b"late\n\n"))
                terminator = Payload(b"event: closing\n\n").framed + b"0\r\n\r\n"
                seen = await read_until(client, lambda seen: seen.endswith(terminator), seen)
                assert seen == Payload(HELLO).framed + b"".join(p.framed for p in sent) + terminator
                # uvicorn saw the response end: the same connection serves the next request.
                again, _ = await open_stream(site, client)
                assert isinstance(again, adapter.UvicornWriter)
            finally:
                client.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_paused_stream_keeps_a_bounded_backlog_and_writes_it_in_order_once_drained(loop: str) -> None:
    async def scenario() -> None:
        async with Site(max_pending=5, send_buffer=4096) as site:
            client = await site.connect(receive_buffer=4096)
            try:
                writer, seen = await open_stream(site, client)
                taken: list[Payload] = []
                stream = iter(payloads(10_000, 2000))

                def write_one() -> None:
                    payload = next(stream)
                    assert writer.write(payload)
                    taken.append(payload)

                async def write_and_yield() -> None:
                    write_one()
                    await asyncio.sleep(0)  # uvloop writes at the end of the loop's turn

                # Written straight until uvicorn's flow control pauses the stream (transport buffer past 64 KiB).
                await until(lambda: writer.pending is not None, write_and_yield, 10_000)
                assert writer.flow.write_paused
                assert writer.resuming is not None
                while writer.pending_frames < writer.max_pending:
                    write_one()
                refused = next(stream)
                assert not writer.write(refused)  # past max_pending: the caller resets the stream
                # The reader catches up: everything taken arrives, in order, and the backlog is gone.
                expected = Payload(HELLO).framed + b"".join(p.framed for p in taken)
                seen = await read_until(client, lambda seen: len(seen) >= len(expected), seen)
                assert seen == expected
                await until(lambda: writer.pending is None and writer.resuming is None, lambda: asyncio.sleep(0), 1000)
                assert writer.write(refused)
                writer.end()
                await writer.aended()
                await read_until(client, lambda seen: seen.endswith(refused.framed + b"0\r\n\r\n"), seen)
            finally:
                client.close()

    run(loop, scenario)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_reader_that_never_drains_is_dropped_after_the_grace_period(loop: str) -> None:
    async def scenario() -> None:
        async with Site(max_pending=5, send_buffer=4096) as site:
            client = await site.connect(receive_buffer=4096)
            try:
                writer, _ = await open_stream(site, client)
                stream = iter(payloads(10_000, 2000))

                async def write_and_yield() -> None:
                    assert writer.write(next(stream))
                    await asyncio.sleep(0)

                await until(lambda: writer.pending is not None, write_and_yield, 10_000)
                writer.end(b"event: reset\n\n", abort_after_secs=0.2)
                assert writer.pending is None
                assert writer.resuming is None
                # The end waits for a drain that never comes, until the connection is aborted.
                await writer.aended()
                assert writer.cycle.disconnected
                received = b""
                loop = asyncio.get_running_loop()
                try:
                    while chunk := await loop.sock_recv(client, 65536):
                        received += chunk
                except ConnectionResetError:
                    pass
                assert not received.endswith(b"0\r\n\r\n")
            finally:
                client.close()

    run(loop, scenario)


def test_uvicorn_h11_gets_the_queued_writer_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(adapter, "_warned", False)

    async def scenario() -> None:
        async with Site(http="h11") as site:
            clients = [await site.connect() for _ in range(2)]
            try:
                for client in clients:
                    writer, _ = await open_stream(site, client)
                    assert isinstance(writer, QueuedWriter)
                    writer.write(Payload(b"data: 1\n\n"))
                    await read_until(client, lambda seen: seen.endswith(Payload(b"data: 1\n\n").framed))
                    await writer.aclose()
            finally:
                for client in clients:
                    client.close()

    with caplog.at_level(logging.WARNING, logger=adapter.__name__):
        run("uvloop", scenario)
    assert [r.message for r in caplog.records if r.name == adapter.__name__] == [
        "uvicorn streams use the queued writer: the direct transport path is unavailable here"
    ]


async def test_another_server_s_send_is_not_taken_for_uvicorn_s(caplog: pytest.LogCaptureFixture) -> None:
    async def send(message: Any) -> None:
        pass

    assert adapter.direct_writer(send, max_pending=5) is None
    assert isinstance(servers.stream_writer(send, max_pending=5), QueuedWriter)
    assert not [r for r in caplog.records if r.name == adapter.__name__]
