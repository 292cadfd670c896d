"""The LIKES settings dict, its defaults, and a lazy accessor."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # At most one like event per video per this many milliseconds, across every worker process.
    "COALESCE_MS": 250,
    # The coalescing locks and published totals live in Redis when REDIS_URL is set (realtime.stores), so
    # every worker shares them; else in this process (the embedded default runs one process).
}


def get(name: str) -> Any:
    """Return LIKES[name] from settings, falling back to the default."""
    return getattr(settings, "LIKES", {}).get(name, DEFAULTS[name])
