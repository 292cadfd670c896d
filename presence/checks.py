"""System checks for the PRESENCE settings and their wiring into the real-time worker."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

from presence import conf
from realtime import conf as realtime_conf
from realtime import stores

# Below 2 x HEARTBEAT_SECS a member flickers offline whenever one heartbeat is merely late. At 2 x (the
# defaults, 30 s and 60 s) one heartbeat call may fail without a flicker; the margin for drops comes from the
# extra beats workers send when a stream opens and when it closes, so a reconnect within the whole window
# changes nothing.


@register()
def check_presence_settings(app_configs: Any, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    heartbeat = float(conf.get("HEARTBEAT_SECS"))
    offline_after = float(conf.get("OFFLINE_AFTER_SECS"))
    if heartbeat <= 0 or offline_after <= 0:
        problems.append(
            Error(
                f"PRESENCE HEARTBEAT_SECS ({heartbeat}) and OFFLINE_AFTER_SECS ({offline_after}) must be positive",
                id="presence.E003",
            )
        )
        return problems
    floor = 2 * heartbeat
    if offline_after < floor:
        problems.append(
            Error(
                f"PRESENCE OFFLINE_AFTER_SECS ({offline_after}s) is below twice HEARTBEAT_SECS ({heartbeat}s): "
                "members would flicker offline whenever a heartbeat runs late",
                hint=f"set PRESENCE_OFFLINE_AFTER_SECS to at least {floor:g} (or lower PRESENCE_HEARTBEAT_SECS)",
                id="presence.E001",
            )
        )
    worker_heartbeat = float(realtime_conf.get("HEARTBEAT_SECS"))
    if worker_heartbeat != heartbeat:
        problems.append(
            Error(
                f"REALTIME HEARTBEAT_SECS ({worker_heartbeat}s, what workers use) differs from PRESENCE "
                f"HEARTBEAT_SECS ({heartbeat}s, what the offline threshold is checked against)",
                hint="set both from PRESENCE_HEARTBEAT_SECS",
                id="presence.E002",
            )
        )
    layer = getattr(settings, "CHANNEL_LAYERS", {}).get("default", {}).get("BACKEND", "")
    if "InMemory" not in layer and not stores.url():
        problems.append(
            Error(
                "the channel layer is shared (several workers) but REDIS_URL is empty: each worker would "
                "keep its own presence state, so members would flicker and events repeat",
                hint="set REDIS_URL to the Redis server the workers share",
                id="presence.E005",
            )
        )
    return problems
