from django.apps import AppConfig


class LikesConfig(AppConfig):
    name = "likes"
    verbose_name = "Live videos, likes and comments"

    def ready(self) -> None:
        from likes import checks  # noqa: F401 (registers the system checks)
