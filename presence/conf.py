"""The PRESENCE settings dict, its defaults, and a lazy accessor."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Each worker beats for the members holding a stream on it every HEARTBEAT_SECS. The worker reads its own
    # copy, REALTIME["HEARTBEAT_SECS"]; this one is for the checks and must be equal (presence.E002).
    "HEARTBEAT_SECS": 30.0,
    # A member goes offline after no heartbeat for this long; at least 2 x HEARTBEAT_SECS (presence.E001).
    "OFFLINE_AFTER_SECS": 60.0,
    # Where the state lives: Redis when REDIS_URL is set (realtime.stores), else this process's memory (the
    # embedded default, ONE process only). Keys live under REDIS_KEY_PREFIX.
    # How often each worker looks for silent members; None: OFFLINE_AFTER_SECS / 10. Offline events come at
    # most this much later than OFFLINE_AFTER_SECS after the last heartbeat.
    "SWEEP_SECS": None,
    # At most this many members taken offline per Redis call, so one sweep never blocks Redis for long.
    "SWEEP_BATCH": 1000,
    # Members per heartbeat script call: bounds how long one call holds Redis.
    "HEARTBEAT_BATCH": 1000,
    # How often (cluster-wide: one worker wins a Redis lock) the admin's Presence table is repaired from the
    # store: it fixes transitions whose table write was lost and refreshes the last-seen times of online members.
    "RECONCILE_SECS": 60.0,
    # Table writes waiting for the database; past this, a write is dropped (counted) and the next
    # reconciliation repairs the table. Keeps a slow database from growing a worker's memory.
    "MAX_PENDING_TABLE_WRITES": 100,
    # Whether anonymous visitors may see members' presence (GET /api/presence, the presence.member.{id} topics).
    # Off: signed-in members only, since last-seen times are personal.
    "PUBLIC": False,
    # Members one GET /api/presence may ask for.
    "MAX_MEMBERS_PER_REQUEST": 200,
}


def get(name: str) -> Any:
    """Return PRESENCE[name] from settings, falling back to the default."""
    return getattr(settings, "PRESENCE", {}).get(name, DEFAULTS[name])


def sweep_secs() -> float:
    """The sweep interval in seconds: SWEEP_SECS, or a tenth of OFFLINE_AFTER_SECS."""
    value = get("SWEEP_SECS")
    return float(value) if value else get("OFFLINE_AFTER_SECS") / 10
