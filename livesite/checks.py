"""Deployment checks of the site's own settings (`manage.py check --deploy`)."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def check_secret_key(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The built-in development key must never sign a production session."""
    if getattr(settings, "DEVELOPMENT_SECRET_KEY", None) == settings.SECRET_KEY:
        return [
            Error(
                "SECRET_KEY is the built-in development key: anyone can forge sessions and CSRF tokens",
                hint="set SECRET_KEY to a long random value, e.g. from secrets.token_urlsafe(50)",
                id="livesite.E001",
            )
        ]
    return []
