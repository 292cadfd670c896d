"""Which path goes to which real-time endpoint: one implementation per endpoint, routed by path alone."""

from realtime import endpoints
from realtime.http import ASGIApp
from realtime.stream import stream

ROUTES: dict[str, ASGIApp] = {
    "/realtime/connect": stream,
    "/realtime/subscriptions": endpoints.subscriptions,
    "/realtime/peer/events": endpoints.peer_events,
    "/realtime/stats": endpoints.stats,
    "/api/publish": endpoints.publish,
}
