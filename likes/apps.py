from django.apps import AppConfig


class LikesConfig(AppConfig):
    name = "likes"
    verbose_name = "Live videos, likes and comments"

    def ready(self) -> None:
        from likes import checks, services  # noqa: F401 (checks: registers the system checks)
        from realtime import hooks, policies

        # Anyone watching may read a video's likes and comments; only likes.services announces them.
        policies.declare(policies.Namespace("video.{id}.likes", owner="likes.services"))
        policies.declare(policies.Namespace("video.{id}.comments", owner="likes.services"))
        policies.declare(policies.Namespace("videos.likes", owner="likes.services"))
        hooks.add_stats("likes", services.figures)
