"""The LIKES settings dict, its defaults, and a lazy accessor."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # At most one like event per video per this many milliseconds, across every worker process.
    "COALESCE_MS": 250,
    # Where the coalescing locks and published totals live so that every worker shares them; empty: in
    # this process (the embedded default runs one process). Falls back to settings.REDIS_URL.
    "REDIS_URL": None,
}


def get(name: str) -> Any:
    """Return LIKES[name] from settings, falling back to the default."""
    value = getattr(settings, "LIKES", {}).get(name, DEFAULTS[name])
    if name == "REDIS_URL" and value is None:
        return getattr(settings, "REDIS_URL", "")
    return value
