"""ASGI entry point: the real-time endpoints and the like endpoint by path, everything else through Django."""

import gc
import logging
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "livesite.settings")

from collections.abc import Callable

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase


class OneHopASGIHandler(ASGIHandler):
    """Django's ASGI handler with its middleware chain run synchronously, in one thread hop per request.

    Every middleware Django ships is async-capable, and under ASGI each one then runs process_request and
    process_response through sync_to_async: two thread hops per middleware and request (sixteen here), about
    half of a small API request's CPU (docs/benchmarks.md). None of them does I/O, and every view behind them
    is sync (the async endpoints are routed before Django), so the chain is built in sync mode and entered
    once. Same middleware, same order, same behaviour; an async view would still run, through async_to_sync.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        chain: Callable[[HttpRequest], HttpResponseBase] = self._middleware_chain  # type: ignore[has-type]
        self._middleware_chain = sync_to_async(chain, thread_sensitive=True)


django.setup(set_prefix=False)
django_application = OneHopASGIHandler()

from likes import endpoints as likes_endpoints  # noqa: E402 (after setup: needs the app registry)
from realtime import conf, context  # noqa: E402
from realtime.http import ASGIApp, Receive, Scope, Send  # noqa: E402
from realtime.routing import ROUTES, body_limit  # noqa: E402
from realtime.servers import daphne, guard  # noqa: E402
from realtime.worker import aget_worker, astop_worker  # noqa: E402

logger = logging.getLogger(__name__)

# Under Daphne: bodies capped while read, forms never parsed in the event loop, trickling clients cut off.
# Under any other server, the same caps and deadline for Django's requests at the ASGI level (the guard steps
# aside for good once a request shows Daphne's guard in front); the real-time endpoints read their own bodies.
daphne.guard_requests(limit_for=body_limit, deadline_secs=conf.get("REQUEST_DEADLINE_SECS"))
django_entry: ASGIApp = guard.guard_requests(
    django_application, limit_for=body_limit, deadline_secs=conf.get("REQUEST_DEADLINE_SECS")
)

# A worker holds thousands of long-lived objects per thousand streams, and each write allocates. With the
# default thresholds CPython ran a full collection every ~1.4 s at 5,000 streams, about half of the worker's
# CPU and a 0.4 s stall each time (docs/benchmarks.md). Everything imported so far lives for the process:
# freeze it out of the collector's sight, and collect the young generations far less often.
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 10)


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http":
        context.begin(scope)
        # The like endpoint has an id in its path, so it is matched after the fixed real-time paths.
        route = ROUTES.get(scope["path"]) or likes_endpoints.route(scope["path"])
        if route is not None:
            return await route(scope, receive, send)
    elif scope["type"] == "lifespan":
        return await lifespan(receive, send)
    return await django_entry(scope, receive, send)


async def lifespan(receive: Receive, send: Send) -> None:
    """The ASGI lifespan, for servers that have one (uvicorn, hypercorn; Daphne has none): start the worker
    at startup, end its streams and withdraw its registrations at shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await aget_worker()
            except Exception as exc:
                logger.exception("the realtime worker did not start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await astop_worker()
            await send({"type": "lifespan.shutdown.complete"})
            return
