"""The SSE endpoint, GET /realtime/connect: authorise, register, stream, unregister.

A bare ASGI app rather than a Channels consumer: a consumer takes a channel-layer channel and a task per
connection, this takes one task and no channel (FIELD-NOTES: 18.6 KB vs 35 KB per connection). Events are
written by the worker's fan-out through the stream's writer (realtime.servers); this task waits for the
client to leave or the server to end the stream, then cleans up.
"""

import asyncio
import contextlib
import json
import logging

from realtime import auth, bodies, caps, conf, limits, policies, servers, sse
from realtime.history import Position
from realtime.http import HttpError, Receive, Request, Send, check_method, endpoint
from realtime.hub import CLOSING_FRAME, RESET_GRACE_SECS, Connection, Payload, body
from realtime.servers.queued import QueuedWriter
from realtime.topics import ForbiddenTopic, InvalidTopic, TooManyTopics
from realtime.worker import AccessChanging, Worker, aget_worker

logger = logging.getLogger(__name__)

STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache, no-store"),
    (b"x-accel-buffering", b"no"),
    (b"x-content-type-options", b"nosniff"),
    # A stream the server ends (reset, closing, revoked) is reconnected anew: its connection goes with it rather
    # than idling for the server's keep-alive timeout (uvicorn's is 75 s behind nginx, deploy/systemd).
    (b"connection", b"close"),
]


def _topics(request: Request) -> list[str]:
    try:
        return bodies.connect_topics(request.query("topics"), limit=conf.get("MAX_TOPICS_PER_CONNECTION"))
    except InvalidTopic as exc:
        raise HttpError(400, "invalid_topic", str(exc)) from None
    except TooManyTopics as exc:
        raise HttpError(409, "too_many_topics", str(exc)) from None


@endpoint
async def stream(request: Request, receive: Receive, send: Send) -> None:
    """GET /realtime/connect[?topics=a,b]: the one SSE stream of a client."""
    check_method(request, ("GET",))
    await limits.ahit("connect", request.client_address)
    topics = _topics(request)
    try:
        since = bodies.connect_since(request.query("since"), request.header("last-event-id"), topics)
    except bodies.Invalid as exc:
        raise HttpError(400, "invalid_since", exc.detail) from None
    # A native EventSource reconnecting to a multi-topic stream names one topic's position: the others cannot
    # be resumed, and are said to have a gap (realtime.js sends `since` for all of them instead).
    lost = [] if (since and request.query("since")) or not request.header("last-event-id") else topics
    ticket = request.query("ticket")
    caller = await (auth.aauthenticate_ticket(ticket[0]) if ticket else auth.aauthenticate(request))
    worker = await aget_worker()
    # A topic revocation after this mark, before the topics are subscribed, has them checked again (aattach).
    checked_at = worker.revocation_mark()
    try:
        await policies.acheck_read(topics, caller.member_id, conf.get("OPEN_NAMESPACES"))
    except ForbiddenTopic as exc:
        raise HttpError(403, "forbidden_topic", str(exc)) from None

    member_id, credential = caller.member_id, caller.credential
    holders = caps.Holders.of(request.client_address, member_id)
    del request, caller  # Held by this frame for the stream's life otherwise.

    connection_id = worker.new_connection_id()
    if holders.entries:
        try:
            await caps.get().aacquire(holders, worker.channel, connection_id)
        except caps.CapReached as exc:
            raise HttpError(429, "too_many_streams", str(exc), headers=[(b"retry-after", b"5")]) from None
    try:
        await _serve(worker, connection_id, topics, since, lost, member_id, credential, checked_at, receive, send)
    finally:
        if holders.entries:
            worker.spawn(caps.get().arelease(holders, worker.channel, connection_id))


async def _serve(
    worker: Worker,
    connection_id: str,
    topics: list[str],
    since: dict[str, Position],
    lost: list[str],
    member_id: int | None,
    credential: str | None,
    checked_at: int,
    receive: Receive,
    send: Send,
) -> None:
    """The stream itself, once it may open: headers, registration, hello, resume, then wait for the end."""
    await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
    # Headers leave the server only with the first body chunk: send the retry hint at once.
    await send(body(sse.retry(conf.get("RETRY_MS"))))
    writer = servers.stream_writer(send, max_pending=conf.get("MAX_PENDING_FRAMES"))
    conn = Connection(connection_id, member_id, writer, credential)
    lingering = False
    try:
        try:
            await worker.aattach(conn, topics, since, lost, checked_at=checked_at)
        except (ForbiddenTopic, AccessChanging) as exc:
            # Revoked while the stream opened (its status is sent): said in a last frame; reconnecting is refused
            # (403) or, if the access keeps changing, tried again.
            code = "forbidden_topic" if isinstance(exc, ForbiddenTopic) else "unavailable"
            conn.close(_error_frame(code, str(exc)))
            lingering = True
        except Exception:
            # The response has started: no status can say it now. A last frame says why, then the stream ends.
            logger.exception("stream %s could not register its topics", conn.id)
            conn.close(_error_frame("registration_failed", "the stream could not be set up: reconnect shortly"))
            lingering = True
        else:
            # No second task per stream (a task costs about a kilobyte, times 100,000 streams): this one waits
            # for the disconnect, and Connection.close (a reset, a stopping worker) cancels that wait.
            conn.task = asyncio.current_task()
            hello = {
                "connection_id": conn.id,
                "member_id": member_id,
                "topics": sorted(conn.topics),
                "positions": worker.positions(topic for topic in conn.topics if topic not in since),
            }
            conn.write(Payload(sse.frame(json.dumps(hello), event="connected")))
            if since or lost:
                await worker.aresume(conn, since, lost)
            while (await receive())["type"] != "http.disconnect":
                pass
    except asyncio.CancelledError:
        task = conn.task
        if task is None or not conn.closed:
            # The server's own cancellation: Daphne cancels every application first thing on SIGTERM, before
            # the worker's own shutdown runs. The response still ends properly (the final chunk), so every
            # client library sees a clean end of stream and reconnects, instead of a broken connection.
            conn.close(CLOSING_FRAME)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.aended(), SHUTDOWN_END_SECS)
            raise
        task.uncancel()
        lingering = True
    finally:
        conn.task = None
        # At once, even when the client has not left yet: an ended stream is no longer one of this worker's.
        worker.detach(conn)
    try:
        if lingering:
            # Ended by the server: the writer finishes the response, or drops a stalled reader after its grace
            # period; the server then reports the disconnect.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_disconnect(receive), timeout=RESET_GRACE_SECS + 1)
    finally:
        if isinstance(writer, QueuedWriter):
            await writer.aclose()


# How long a stream ended by the server's shutdown waits for its last bytes to be handed over.
SHUTDOWN_END_SECS = 2.0


def _error_frame(code: str, detail: str) -> bytes:
    return sse.frame(json.dumps({"code": code, "detail": detail}), event="error")


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
