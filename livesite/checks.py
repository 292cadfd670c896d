"""Deployment checks of the site's own settings (`manage.py check --deploy`)."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


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


@register(Tags.security)
def check_public_deployment(app_configs: Any, **kwargs: Any) -> list[Error | Warning]:
    """A site with a public address is a deployment: no development key, and HTTPS that can be seen."""
    if not getattr(settings, "PUBLIC_ORIGIN", ""):
        return []
    found: list[Error | Warning] = []
    if getattr(settings, "DEVELOPMENT_SECRET_KEY", None) == settings.SECRET_KEY:
        found.append(
            Error(
                f"PUBLIC_ORIGIN is {settings.PUBLIC_ORIGIN} but SECRET_KEY is unset (the built-in development key)",
                hint="set SECRET_KEY to a long random value, e.g. from secrets.token_urlsafe(50)",
                id="livesite.E002",
            )
        )
    if settings.SECURE_SSL_REDIRECT and not getattr(settings, "TRUST_PROXY_HEADERS", False):
        found.append(
            Warning(
                "HTTPS redirects are on but TRUST_PROXY_HEADERS is off: behind a TLS-terminating proxy every request "
                "looks like plain HTTP and is redirected forever",
                hint="set TRUST_PROXY_HEADERS=true when the workers sit behind a proxy that sets X-Forwarded-Proto",
                id="livesite.W002",
            )
        )
    return found
