"""livesite's real-time platform: SSE streams, HTTP subscriptions, two-level fan-out across workers."""

from typing import Any


def publish(topic: str, event_type: str, data: Any) -> Any:
    """Sync: publish one event to every subscriber of `topic` (see realtime.publish.publish)."""
    from realtime.publish import publish as _publish

    return _publish(topic, event_type, data)


async def apublish(topic: str, event_type: str, data: Any) -> Any:
    """Async twin of publish()."""
    from realtime.publish import apublish as _apublish

    return await _apublish(topic, event_type, data)
