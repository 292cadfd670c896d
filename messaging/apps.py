from typing import Any

from django.apps import AppConfig
from django.core.signals import setting_changed


def _forget_stores(*, setting: str, **kwargs: Any) -> None:
    if setting in ("MESSAGING", "REDIS_URL", "REDIS_KEY_PREFIX"):
        from messaging import access, indicators, services

        indicators.reset_store()
        services.set_receipts(None)
        access.reset()


class MessagingConfig(AppConfig):
    name = "messaging"
    verbose_name = "Messaging"

    def ready(self) -> None:
        from messaging import access, checks, conf, sweeper, topics  # noqa: F401 (checks: registers the system checks)
        from realtime import history, hooks, policies

        # A conversation's topics: signed-in members pass the cheap rule, then its participants only, all of a
        # request's conversations in one query; only messaging.services publishes there.
        policies.declare(
            policies.Namespace(
                topics.NAMESPACE_PATTERN,
                owner="messaging.services",
                read=policies.SIGNED_IN,
                aread=access.participants_only,
            )
        )
        # "Bob is typing" is only ever true now: never kept, never replayed after a reconnect.
        history.declare_ephemeral(topics.EPHEMERAL_PATTERN)
        hooks.add_periodic(lambda: float(conf.get("TYPING_SWEEP_SECS")), sweeper.asweep_job)
        hooks.add_stats("messaging", lambda: sweeper.stats)
        hooks.add_stats("messaging_access", access.figures)
        setting_changed.connect(_forget_stores, dispatch_uid="messaging-forget-stores")
