"""System checks for the REALTIME settings and the channel layer."""

from collections.abc import Sequence

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from realtime import conf


@register()
def check_realtime_settings(app_configs: Sequence[AppConfig] | None, **kwargs: object) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    layers = getattr(settings, "CHANNEL_LAYERS", {})
    if "default" not in layers:
        problems.append(Error("CHANNEL_LAYERS has no 'default' layer", id="realtime.E001"))
        return problems
    config = layers["default"].get("CONFIG", {})
    lease = conf.get("LEASE_SECS")
    group_expiry = config.get("group_expiry", 86400)
    if group_expiry > lease:
        problems.append(
            Error(
                f"the channel layer's group_expiry ({group_expiry}s) outlives REALTIME LEASE_SECS ({lease}s): "
                "a dead worker would keep receiving events",
                hint="set CONFIG['group_expiry'] to LEASE_SECS",
                id="realtime.E002",
            )
        )
    if config.get("capacity", 100) < 1000:
        problems.append(
            Warning(
                "the channel layer's capacity is below 1000: group sends past it are silently dropped",
                id="realtime.W001",
            )
        )
    if conf.get("PEERS") and not conf.get("PEER_SECRET"):
        problems.append(
            Error(
                "REALTIME PEERS lists peer data centres but PEER_SECRET is empty: forwarding cannot be signed, "
                "and every peer refuses unsigned events",
                hint="set REALTIME_PEER_SECRET to the same secret in every data centre",
                id="realtime.E005",
            )
        )
    if conf.get("KEEPALIVE_SECS") <= 0:
        problems.append(Error("REALTIME KEEPALIVE_SECS must be positive", id="realtime.E003"))
    if not 0 <= conf.get("FLUSH_MS") <= 1000:
        problems.append(
            Error(
                "REALTIME FLUSH_MS must be between 0 and 1000 (it adds up to that to a busy topic's latency)",
                id="realtime.E004",
            )
        )
    return problems
