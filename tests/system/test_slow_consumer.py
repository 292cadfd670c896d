"""A stream that stops reading is reset once its backlog is full; the others keep receiving everything.

Under both servers: Daphne (direct socket writes, Twisted's backpressure) and uvicorn (direct transport writes,
uvicorn's own flow control; its `send`, which awaits the drain, only ends the response).
"""

import asyncio
import socket

import httpx
import pytest

from tests.system.harness import SERVERS, SSEClient, eventually, read_to_eof, stats, streams

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


@pytest.mark.parametrize("server", SERVERS)
async def test_a_stalled_reader_is_reset_and_a_live_one_gets_every_event(redis_server, start_worker, tokens, server):
    worker = start_worker(redis_server.url, server=server, REALTIME_MAX_PENDING_FRAMES="20")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills up after a few events
    stalled.connect(("127.0.0.1", worker.port))
    stalled.sendall(f"GET /realtime/connect?topics=big.news HTTP/1.1\r\nHost: 127.0.0.1:{worker.port}\r\n\r\n".encode())
    try:
        async with streams(SSEClient(worker.url, topics=["big.news"])) as (reader,):

            async def both_subscribed():
                return (await stats(worker.url, tokens["admin"]))["connections"] == 2

            await eventually(both_subscribed, timeout=10)
            blob = "x" * 20_000
            reset = False
            async with httpx.AsyncClient(timeout=10) as http:
                for batch in range(20):  # uvicorn: the kernel takes up to 4 MB (tcp_wmem) first
                    response = await http.post(
                        f"{worker.url}/api/publish",
                        json={
                            "events": [
                                {"topic": "big.news", "type": "news", "data": {"n": batch * 20 + i, "blob": blob}}
                                for i in range(20)
                            ]
                        },
                        headers={"Authorization": f"Token {tokens['admin']}"},
                    )
                    assert response.status_code == 202, response.text
                    for i in range(20):
                        frame = await reader.next_event("news", timeout=10)
                        assert frame.json()["data"]["n"] == batch * 20 + i
                    snapshot = await stats(worker.url, tokens["admin"])
                    if snapshot["overflow_closed"]:
                        reset = True
                        break
            assert reset, "the stalled stream was never reset"
            assert snapshot["connections"] == 1
            # Reading again, the stalled client finds the frames it had, then `reset` and the end of the
            # response; then the server drops the connection (after a grace period), so the socket cannot
            # pin buffers for ever. A timeout here would mean the connection was kept.
            received = await asyncio.to_thread(read_to_eof, stalled)
            assert b"event: reset" in received
            assert received.endswith(b"0\r\n\r\n")
    finally:
        stalled.close()
