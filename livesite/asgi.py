"""ASGI entry point: the SSE stream goes straight to its lean app; everything else to Django."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livesite.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from realtime.consumers import stream  # noqa: E402 (needs the app registry)

STREAM_PATH = "/realtime/connect"


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == STREAM_PATH:
        return await stream(scope, receive, send)
    return await django_application(scope, receive, send)
