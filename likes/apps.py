from django.apps import AppConfig


class LikesConfig(AppConfig):
    name = "likes"
    verbose_name = "Live videos, likes and comments"
