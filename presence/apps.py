from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


def _forget_store(*, setting: str, **kwargs: Any) -> None:
    if setting in ("PRESENCE", "REDIS_URL", "REDIS_KEY_PREFIX"):
        from presence import services

        services.reset_store()


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = "Presence"

    def ready(self) -> None:
        from presence import checks, services  # noqa: F401 (checks: registers the system checks)
        from realtime import hooks, policies

        # Every member with an open stream beats; one worker's sweeper turns silence into "offline".
        hooks.on_member_heartbeat(services.arecord_heartbeats)
        hooks.add_background_task(services.asweep_forever)
        hooks.add_stats("presence", lambda: services.stats)
        # Green dots are for signed-in members (PRESENCE PUBLIC opens them to anyone); only presence.services
        # announces a member's changes.
        policies.declare(policies.Namespace("presence.member.{id}", read=services.may_read, owner="presence.services"))

        setting_changed.connect(_forget_store, dispatch_uid="presence-forget-store")
