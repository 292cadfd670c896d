"""System checks for the LIKES settings."""

from typing import Any

from django.core.checks import Error, register

from likes import conf


@register()
def check_likes_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    window = conf.get("COALESCE_MS")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        return [
            Error(
                f"LIKES COALESCE_MS must be a positive whole number of milliseconds, not {window!r}",
                hint="set LIKES_COALESCE_MS to e.g. 250",
                id="likes.E001",
            )
        ]
    return []
