"""ASGI entry point: streams go straight to their lean app, API clients to Django without the browser middleware,
browsers to the whole Django stack."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livesite.settings")

from django.core.asgi import get_asgi_application

django_application = get_asgi_application()

from typing import Any  # noqa: E402

from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402 (after setup)
from django.http.request import split_domain_port, validate_host  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from realtime import api_lane  # noqa: E402 (needs the app registry)
from realtime.consumers import stream  # noqa: E402

STREAM_PATH = "/realtime/connect"
API_PREFIXES = ("/api/", "/realtime/")


def _without_middleware() -> ASGIHandler:
    # Django reads MIDDLEWARE once, when a handler is built; this one is built with none. (override_settings
    # is the public way to do that; nothing else runs meanwhile, this is import time.)
    with override_settings(MIDDLEWARE=[]):
        return ASGIHandler()


# Every middleware Django ships is a MiddlewareMixin, whose async path runs process_request and
# process_response in a thread: two thread hops per middleware and request. Measured: 2.1 ms of a 4.4 ms
# publish POST, and 2.5 ms of a 3.7 ms subscription POST (docs/benchmarks.md). A request that carries an
# `Authorization` header and no cookie is an API client (a service with a DRF token, or a peer data centre),
# and none of that stack is for it: no session, no CSRF (cookie-less requests cannot be forged by a
# browser), no messages, no clickjacking header, no static files. Browsers keep the whole stack.
api_application = _without_middleware()

# A worker holds thousands of long-lived objects per thousand streams, and each write allocates. With the
# default thresholds CPython ran a full collection every ~1.4 s at 5,000 streams, about half of the worker's
# CPU and a 0.4 s stall each time (docs/benchmarks.md). Everything imported so far lives for the process:
# freeze it out of the collector's sight, and collect the young generations far less often.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 10)


def is_api_client(scope: dict) -> bool:
    """An HTTP request to an API path with credentials in a header, no cookie, and an allowed Host.

    A Host outside ALLOWED_HOSTS goes to the whole stack, which refuses it as it refuses any request.
    """
    if scope["type"] != "http" or not scope["path"].startswith(API_PREFIXES):
        return False
    credentials = False
    host = b""
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            return False
        if name in (b"authorization", b"x-livesite-signature"):
            credentials = True
        elif name == b"host":
            host = value
    return credentials and _allowed_host(host)


def _allowed_host(host: bytes) -> bool:
    domain, _port = split_domain_port(host.decode("latin-1"))
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # as HttpRequest.get_host does
    return bool(domain) and validate_host(domain, allowed)


def _nosniff(send: Any) -> Any:
    # The header SecurityMiddleware would have added: no browser may read these JSON answers as anything else.
    async def send_with_header(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), (b"x-content-type-options", b"nosniff")]}
        await send(message)

    return send_with_header


async def _api_with_nosniff(scope: dict, receive: Any, send: Any) -> None:
    await api_application(scope, receive, _nosniff(send))


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"] == STREAM_PATH:
        return await stream(scope, receive, send)
    if is_api_client(scope):
        if api_lane.handles(scope):
            return await api_lane.publish(scope, receive, send, _api_with_nosniff)
        return await _api_with_nosniff(scope, receive, send)
    return await django_application(scope, receive, send)
