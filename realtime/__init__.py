"""livesite's real-time platform: SSE streams, HTTP subscriptions, two-level fan-out across workers.

`realtime.publish` and `realtime.apublish` are the package's public Python API. They live in
`realtime.publishing` (not `realtime.publish`): a submodule named like a package attribute replaces that
attribute as soon as anything imports it, which is how `realtime.publish(...)` once became a module.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.events import Event


def publish(topic: str, event_type: str, data: Any) -> "Event":
    """Sync: publish one event to every subscriber of `topic` (see realtime.publishing.publish)."""
    from realtime.publishing import publish as _publish  # Imported here: needs Django's settings.

    return _publish(topic, event_type, data)


async def apublish(topic: str, event_type: str, data: Any) -> "Event":
    """Async twin of publish()."""
    from realtime.publishing import apublish as _apublish

    return await _apublish(topic, event_type, data)


__all__ = ["apublish", "publish"]
