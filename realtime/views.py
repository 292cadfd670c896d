"""HTTP subscription endpoint: POST subscribes, DELETE unsubscribes a live connection, on any worker."""

import json
import time
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from livesite.errors import error_response
from realtime import auth, conf, peers
from realtime.dispatcher import DispatchUnavailable
from realtime.publishing import adeliver_from_peer, forwarder
from realtime.topics import InvalidTopic, check_topic
from realtime.worker import SUBSCRIBE, UNSUBSCRIBE, SubscriptionError, aget_worker

MAX_BODY_BYTES = 64 * 1024


class BadRequest(Exception):
    pass


def _parse(request: HttpRequest) -> tuple[str, list[str]]:
    if len(request.body) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is larger than {MAX_BODY_BYTES} bytes")
    try:
        payload: Any = json.loads(request.body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest('the body is not JSON: send {"connection_id": "...", "topics": ["..."]}') from None
    if not isinstance(payload, dict):
        raise BadRequest('the body must be a JSON object: {"connection_id": "...", "topics": ["..."]}')
    connection_id = payload.get("connection_id")
    if not isinstance(connection_id, str) or not connection_id or len(connection_id) > 300:
        raise BadRequest("'connection_id' must be the id from the stream's 'connected' event")
    topics = payload.get("topics")
    if not isinstance(topics, list) or not topics:
        raise BadRequest("'topics' must be a non-empty list of topic names")
    limit = conf.get("MAX_TOPICS_PER_CONNECTION")
    if len(topics) > limit:
        raise BadRequest(f"'topics' lists more than {limit} topics")
    try:
        return connection_id, list(dict.fromkeys(check_topic(topic) for topic in topics))
    except InvalidTopic as exc:
        raise BadRequest(str(exc)) from None


def _csrf_failure(request: HttpRequest) -> JsonResponse | None:
    # Session-authenticated calls get Django's CSRF check, as DRF's SessionAuthentication does; token
    # clients send no cookie and need none.
    rejected = CsrfViewMiddleware(lambda _request: None).process_view(request, None, (), {})
    if rejected is None:
        return None
    return error_response(403, "csrf_failed", "CSRF check failed: send the X-CSRFToken header")


@csrf_exempt
async def subscriptions(request: HttpRequest) -> JsonResponse:
    if request.method not in ("POST", "DELETE"):
        return error_response(405, "method_not_allowed", "use POST to subscribe or DELETE to unsubscribe")
    authorization = request.headers.get("Authorization", "")
    try:
        member_id = await auth.aresolve(request.headers.get("Cookie", ""), authorization)
    except auth.BadCredentials as exc:
        return error_response(401, "invalid_token", str(exc))
    if member_id is not None and not authorization:
        failure = _csrf_failure(request)
        if failure is not None:
            return failure
    try:
        connection_id, topics = _parse(request)
    except BadRequest as exc:
        return error_response(400, "invalid", str(exc))
    worker = await aget_worker()
    op = SUBSCRIBE if request.method == "POST" else UNSUBSCRIBE
    try:
        result = await worker.achange(connection_id, op, topics, member_id)
    except SubscriptionError as exc:
        return error_response(exc.status, exc.code, exc.message)
    return JsonResponse({"connection_id": connection_id, "topics": result})


async def stats(request: HttpRequest) -> JsonResponse:
    """This worker's counters, for operators (staff) and the system tests."""
    try:
        member_id = await auth.aresolve(request.headers.get("Cookie", ""), request.headers.get("Authorization", ""))
    except auth.BadCredentials as exc:
        return error_response(401, "invalid_token", str(exc))
    if member_id is None or not await auth.ais_staff(member_id):
        return error_response(403, "staff_only", "worker statistics are for staff members")
    worker = await aget_worker()
    links = forwarder()
    return JsonResponse({**worker.snapshot(), "peers": links.snapshot() if links else {}})


@csrf_exempt
async def peer_events(request: HttpRequest) -> JsonResponse:
    """Events forwarded by a peer data centre: verified, de-duplicated, delivered here, never forwarded."""
    if request.method != "POST":
        return error_response(405, "method_not_allowed", "peers POST their events")
    if len(request.body) > peers.MAX_BATCH * 64 * 1024:
        return error_response(413, "too_large", "the batch is too large")
    try:
        sender = peers.verify(
            request.headers,
            request.body,
            secret=conf.get("PEER_SECRET"),
            known=set(conf.get("PEERS")),
            now=time.time(),
        )
    except peers.InvalidPeerRequest as exc:
        return error_response(403, "peer_rejected", str(exc))
    try:
        events = peers.parse_wire(request.body)
    except ValueError as exc:
        return error_response(400, "invalid", str(exc))
    try:
        delivered = await adeliver_from_peer(events)
    except DispatchUnavailable as exc:
        return error_response(503, "dispatch_unavailable", str(exc))
    return JsonResponse({"from": sender, "received": len(events), "delivered": delivered})
