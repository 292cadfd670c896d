from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


def _forget_store(*, setting: str, **kwargs: Any) -> None:
    if setting == "PRESENCE":
        from presence import services

        services.reset_store()


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = "Presence"

    def ready(self) -> None:
        from presence import checks  # noqa: F401 (registers the system checks)

        setting_changed.connect(_forget_store, dispatch_uid="presence-forget-store")
