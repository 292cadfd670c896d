"""The real-time HTTP endpoints other than the stream: subscriptions, publish, peer events, stats.

Each is a bare ASGI app (realtime.http.endpoint) with one implementation: authenticate (realtime.auth),
validate the body (realtime.bodies), call the core, answer JSON. Refusals from the core arrive as codes; this
module alone maps them to HTTP statuses (`STATUS_OF`).
"""

import ipaddress
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from realtime import auth, bodies, conf, limits, metrics, peers, policies, tickets
from realtime.dispatcher import DispatchUnavailable
from realtime.events import InvalidEvent, ReservedType
from realtime.http import (
    HttpError,
    Receive,
    Request,
    Send,
    aread_body,
    asend_json,
    check_json_content_type,
    check_method,
    endpoint,
    parse_json,
)
from realtime.publishing import adeliver_from_peer, apublish_many, forwarder
from realtime.rpc import (
    FORBIDDEN_TOPIC,
    NOT_YOUR_CONNECTION,
    TOO_MANY_TOPICS,
    UNAVAILABLE,
    UNKNOWN_CONNECTION,
    Refused,
)
from realtime.topics import TooManyTopics
from realtime.worker import SUBSCRIBE, UNSUBSCRIBE, aget_worker

logger = logging.getLogger(__name__)

SUBSCRIPTION_BODY_LIMIT = 64 * 1024
PEER_BODY_LIMIT = peers.MAX_BATCH * 64 * 1024
# Django's own limit for request bodies, which the publish API always had.
PUBLISH_BODY_LIMIT = 2_621_440

STATUS_OF = {
    UNAVAILABLE: 503,
    UNKNOWN_CONNECTION: 404,
    NOT_YOUR_CONNECTION: 403,
    FORBIDDEN_TOPIC: 403,
    TOO_MANY_TOPICS: 409,
}

UNAVAILABLE = "the real-time dispatcher is unreachable; retry shortly (events not listed as sent were not sent)"


def _who(caller: auth.Caller, request: Request) -> str:
    """What a rate limit counts: the member, else the client address."""
    return f"member:{caller.member_id}" if caller.member_id is not None else f"address:{request.client_address}"


def _refusal(exc: Refused) -> HttpError:
    status = STATUS_OF[exc.code]
    return HttpError(status, exc.code, exc.message, headers=[(b"retry-after", b"1")] if status == 503 else ())


def _invalid(exc: bodies.Invalid) -> HttpError:
    return HttpError(400, "invalid", exc.detail, errors=exc.errors)


@endpoint
async def subscriptions(request: Request, receive: Receive, send: Send) -> None:
    """POST subscribes, DELETE unsubscribes a live connection, held by this worker or any other."""
    check_method(request, ("POST", "DELETE"))
    await aread_body(request, receive, SUBSCRIPTION_BODY_LIMIT)
    caller = await auth.aauthenticate(request)
    await limits.ahit("subscribe", _who(caller, request))
    check_json_content_type(request)
    try:
        connection_id, topics, since = bodies.subscription(
            parse_json(request.body), limit=conf.get("MAX_TOPICS_PER_CONNECTION")
        )
    except bodies.Invalid as exc:
        raise _invalid(exc) from None
    except TooManyTopics as exc:
        raise HttpError(409, TOO_MANY_TOPICS, str(exc)) from None
    worker = await aget_worker()
    op = SUBSCRIBE if request.method == "POST" else UNSUBSCRIBE
    try:
        result = await worker.achange(connection_id, op, topics, caller.member_id, since if op == SUBSCRIBE else {})
    except Refused as exc:
        raise _refusal(exc) from None
    await asend_json(send, 200, {"connection_id": connection_id, **result})


@endpoint
async def stream_ticket(request: Request, receive: Receive, send: Send) -> None:
    """POST /realtime/tickets: a single-use ticket for `GET /realtime/connect?ticket=...` (EventSource cannot
    send an Authorization header), valid for tickets.TICKET_SECS, for the credential of this request."""
    check_method(request, ("POST",))
    await aread_body(request, receive, SUBSCRIPTION_BODY_LIMIT)
    caller = await auth.aauthenticate(request)
    if caller.member_id is None or not caller.secret:
        raise HttpError(
            401,
            "not_authenticated",
            "a stream ticket is for a signed-in member: send 'Authorization: Token <key>' or a session",
            headers=[(b"www-authenticate", b"Token")],
        )
    await limits.ahit("connect", _who(caller, request))
    ticket = await tickets.get().aissue(caller.scheme, caller.secret)
    await asend_json(send, 201, {"ticket": ticket, "expires_in": tickets.TICKET_SECS})


@endpoint
async def publish(request: Request, receive: Receive, send: Send) -> None:
    """POST one event, or a batch `{"events": [...]}`; 202 with the ids once every event is handed over."""
    check_method(request, ("POST",))
    await aread_body(request, receive, PUBLISH_BODY_LIMIT)
    caller = await auth.aauthenticate(request)
    if caller.member_id is None:
        raise HttpError(
            401,
            "not_authenticated",
            "publishing needs credentials: 'Authorization: Token <key>' or a signed-in session",
            headers=[(b"www-authenticate", b"Token")],
        )
    if not auth.can_publish(caller):
        raise HttpError(403, "permission_denied", f"publishing needs the '{auth.PUBLISH_PERMISSION}' permission")
    await limits.ahit("publish", _who(caller, request))
    check_json_content_type(request)
    try:
        items = bodies.publish(parse_json(request.body))
    except bodies.Invalid as exc:
        raise _invalid(exc) from None
    except ReservedType as exc:
        raise HttpError(403, "reserved_type", str(exc)) from None
    open_names = frozenset(conf.get("OPEN_NAMESPACES"))
    try:
        for topic, event_type, _ in items:
            policies.check_api_publish(topic, event_type, open_names)
    except policies.PublishRefused as exc:
        raise HttpError(403, "not_publishable", str(exc)) from None
    try:
        events = await apublish_many(items)
    except InvalidEvent as exc:
        raise HttpError(400, "invalid", str(exc), errors={"data": [str(exc)]}) from None
    except DispatchUnavailable:
        raise HttpError(503, "dispatch_unavailable", UNAVAILABLE, headers=[(b"retry-after", b"1")]) from None
    await asend_json(send, 202, {"ids": [event.id for event in events]})


@endpoint
async def peer_events(request: Request, receive: Receive, send: Send) -> None:
    """Events forwarded by a peer data centre: verified, de-duplicated, delivered here, never forwarded."""
    check_method(request, ("POST",))
    await aread_body(request, receive, PEER_BODY_LIMIT)
    sender = auth.verify_peer(request, now=time.time())
    try:
        events = peers.parse_wire(request.body, max_event_bytes=conf.get("MAX_EVENT_BYTES"))
    except ValueError as exc:
        raise HttpError(400, "invalid", str(exc)) from None
    try:
        delivered = await adeliver_from_peer(events)
    except DispatchUnavailable as exc:
        raise HttpError(503, "dispatch_unavailable", str(exc), headers=[(b"retry-after", b"1")]) from None
    await asend_json(send, 200, {"from": sender, "received": len(events), "delivered": delivered})


@endpoint
async def stats(request: Request, receive: Receive, send: Send) -> None:
    """This worker's counters, or with `?scope=cluster` every worker's, for operators (staff) and the tests."""
    check_method(request, ("GET",))
    caller = await auth.aauthenticate(request)
    if not caller.is_staff:
        raise HttpError(403, "staff_only", "worker statistics are for staff members")
    worker = await aget_worker()
    links = forwarder()
    mine = {**worker.snapshot(), "peers": links.snapshot() if links else {}}
    scope = (request.query("scope") or ["worker"])[0]
    if scope == "worker":
        await asend_json(send, 200, mine)
        return
    if scope != "cluster":
        raise HttpError(400, "invalid", "scope is 'worker' (this worker, the default) or 'cluster' (every worker)")
    snapshots = await _cluster(mine)
    await asend_json(
        send,
        200,
        {
            "scope": "cluster",
            "workers": snapshots,
            "totals": metrics.totals(snapshots),
            "busiest_topics": metrics.busiest(snapshots),
        },
    )


@endpoint
async def prometheus(request: Request, receive: Receive, send: Send) -> None:
    """GET /metrics: every worker's figures in the Prometheus text format, for a scraper on the private network
    (REALTIME_METRICS_ALLOW) or a staff member's token."""
    check_method(request, ("GET",))
    # Through a proxy the address is the proxy's if it forgot X-Forwarded-For: a proxied request is never the
    # scraper's (the shipped nginx site does not even pass /metrics on), only a staff member's.
    proxied = any(request.header(name) for name in ("x-forwarded-for", "x-forwarded-host", "x-real-ip", "forwarded"))
    if proxied or not _scraper_allowed(request.client_address):
        caller = await auth.aauthenticate(request)
        if not caller.is_staff:
            raise HttpError(
                403, "staff_only", "metrics are for the scraper's network (REALTIME_METRICS_ALLOW) or staff members"
            )
    worker = await aget_worker()
    body = metrics.prometheus_text(await _cluster(worker.snapshot()))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", PROMETHEUS_TYPE)]})
    await send({"type": "http.response.body", "body": body})


PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


async def _cluster(mine: dict[str, Any]) -> list[dict[str, Any]]:
    """Every live worker's latest snapshot, this worker's fresh; this one alone if the directory is unreadable."""
    try:
        others = [found for found in await metrics.directory.aread() if found.get("worker") != mine["worker"]]
    except RedisError as exc:
        logger.warning("the cluster's snapshots are unreadable: %s", exc)
        others = []
    return [mine, *others]


def _scraper_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(network, strict=False) for network in conf.get("METRICS_ALLOW"))
