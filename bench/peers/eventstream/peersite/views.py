"""The benchmark's endpoints beside the library's stream: publish with `send_event`, and count open streams.

Both answer only requests carrying the shared secret in `X-Bench-Secret` (PEER_PUBLISH_SECRET).
"""

import hmac
import json
import os
import time

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from django_eventstream import send_event
from django_eventstream.views import get_listener_manager


def _authorised(request: HttpRequest) -> bool:
    secret = settings.PEER_PUBLISH_SECRET.encode()
    given = request.headers.get("X-Bench-Secret", "").encode()
    return bool(secret) and hmac.compare_digest(given, secret)


def _forbidden() -> JsonResponse:
    return JsonResponse({"detail": "missing or wrong X-Bench-Secret header", "code": "forbidden"}, status=403)


@csrf_exempt
@require_POST
def publish(request: HttpRequest) -> JsonResponse:
    """POST {"channel", "type", "data"}: one `send_event` (Redis PUBLISH to every process); 202.

    A dict `data` gets `published_at` (this server's clock just before `send_event`), the counterpart of the
    `published_at` stamp livesite puts in each event.
    """
    if not _authorised(request):
        return _forbidden()
    try:
        body = json.loads(request.body)
        channel, event_type, data = body["channel"], body["type"], body["data"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"detail": 'expected JSON {"channel", "type", "data"}', "code": "invalid"}, status=400)
    if isinstance(data, dict):
        data = {**data, "published_at": time.time()}
    send_event(channel, event_type, data)
    return JsonResponse({"channel": channel}, status=202)


@require_GET
def stats(request: HttpRequest) -> JsonResponse:
    """GET: this process's open streams (the library's listeners), in total and per channel."""
    if not _authorised(request):
        return _forbidden()
    manager = get_listener_manager()
    with manager.lock:
        per_channel = {channel: len(listeners) for channel, listeners in manager.listeners_by_channel.items()}
        connections = len(set().union(*manager.listeners_by_channel.values()))
    return JsonResponse({"pid": os.getpid(), "connections": connections, "channels": per_channel})
