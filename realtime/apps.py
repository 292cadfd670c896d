import re

from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "realtime"
    verbose_name = "Real-time platform"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group, Permission
        from django.core.signals import setting_changed
        from django.db.models.signals import m2m_changed, post_delete, post_save
        from rest_framework.authtoken.models import Token

        from realtime import census, checks, conf, history, hooks, policies, tokens  # noqa: F401 (checks: registers the system checks)

        # The core's own namespaces: a member's private topics, published by the server only; viewer counts.
        policies.declare(policies.Namespace("member.{member}.*", owner="realtime", read=policies.MEMBER))
        # Who is watching (member ids) is for signed-in members; the counts are public. Declared first: the
        # first declared pattern that matches a topic decides.
        policies.declare(
            policies.Namespace(f"{census.MEMBERS_PREFIX}*", owner="realtime (census)", read=policies.SIGNED_IN)
        )
        policies.declare(policies.Namespace(f"{census.CENSUS_PREFIX}*", owner="realtime (census)"))
        # A census count is a state announced again every CENSUS_SECS, not history: never kept nor replayed.
        # Kept, each topic any stream named (a made-up video id too) left keys in Redis for a day.
        history.declare_ephemeral(re.escape(census.CENSUS_PREFIX) + r".*")
        if conf.get("CENSUS_TOPICS"):
            hooks.add_periodic(lambda: conf.get("CENSUS_SECS"), census.areport_job)

        user_model = get_user_model()
        post_delete.connect(tokens.on_token_deleted, sender=Token, dispatch_uid="realtime.tokens.token")
        for signal in (post_save, post_delete):
            signal.connect(tokens.on_user_changed, sender=user_model, dispatch_uid="realtime.tokens.user")
        for through in (user_model.user_permissions.through, user_model.groups.through, Group.permissions.through):
            m2m_changed.connect(
                tokens.on_permissions_changed, sender=through, dispatch_uid=f"realtime.tokens.{through}"
            )
        for model in (Group, Permission):
            post_delete.connect(tokens.on_permissions_changed, sender=model, dispatch_uid=f"realtime.tokens.{model}")
        setting_changed.connect(_settings_changed, dispatch_uid="realtime.tokens.settings")

        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import pre_save

        from realtime import revocation

        # Revocation that takes effect on open streams, on every worker.
        user_logged_out.connect(revocation.on_logged_out, dispatch_uid="realtime.revocation.logout")
        post_delete.connect(revocation.on_token_deleted, sender=Token, dispatch_uid="realtime.revocation.token")
        pre_save.connect(revocation.on_user_saving, sender=user_model, dispatch_uid="realtime.revocation.user")
        post_delete.connect(revocation.on_user_deleted, sender=user_model, dispatch_uid="realtime.revocation.gone")


def _settings_changed(setting: str, **kwargs: object) -> None:
    if setting == "REALTIME":
        from realtime import tokens

        tokens.reset_cache()
