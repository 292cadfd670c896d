"""ASGI entry point: the SSE stream goes straight to its lean app; everything else to Django."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livesite.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from realtime.consumers import stream  # noqa: E402 (needs the app registry)

STREAM_PATH = "/realtime/connect"

# A worker holds thousands of long-lived objects per thousand streams, and each write allocates. With the
# default thresholds CPython ran a full collection every ~1.4 s at 5,000 streams, about half of the worker's
# CPU and a 0.4 s stall each time (docs/benchmarks.md). Everything imported so far lives for the process:
# freeze it out of the collector's sight, and collect the young generations far less often.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 10)


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == STREAM_PATH:
        return await stream(scope, receive, send)
    return await django_application(scope, receive, send)
