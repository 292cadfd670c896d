from django.apps import AppConfig


class LivesiteConfig(AppConfig):
    """The project itself, as an app: only for its deployment checks."""

    name = "livesite"
    verbose_name = "livesite"

    def ready(self) -> None:
        from livesite import checks  # noqa: F401 (registers the checks)
