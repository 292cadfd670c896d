"""Which path goes to which real-time endpoint: one implementation per endpoint, routed by path alone."""

from django.conf import settings

from realtime import endpoints, health
from realtime.http import ASGIApp
from realtime.stream import stream

ROUTES: dict[str, ASGIApp] = {
    "/realtime/connect": stream,
    "/realtime/subscriptions": endpoints.subscriptions,
    "/realtime/peer/events": endpoints.peer_events,
    "/realtime/stats": endpoints.stats,
    "/realtime/tickets": endpoints.stream_ticket,
    "/metrics": endpoints.prometheus,
    "/api/publish": endpoints.publish,
    "/healthz": health.healthz,
    "/readyz": health.readyz,
}

# The largest body each path takes; anything else gets Django's own limit (DATA_UPLOAD_MAX_MEMORY_SIZE).
BODY_LIMITS = {
    "/realtime/subscriptions": endpoints.SUBSCRIPTION_BODY_LIMIT,
    "/realtime/tickets": endpoints.SUBSCRIPTION_BODY_LIMIT,
    "/realtime/peer/events": endpoints.PEER_BODY_LIMIT,
    "/api/publish": endpoints.PUBLISH_BODY_LIMIT,
}


def body_limit(path: bytes) -> int:
    """The body size past which a request to `path` is refused (413) while it is still being read."""
    limit = BODY_LIMITS.get(path.decode("latin-1"))
    return limit if limit is not None else int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440)
