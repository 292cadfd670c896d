"""The HTTP edge of the real-time endpoints: ASGI requests in, JSON answers out, one error shape.

The real-time endpoints (stream, subscriptions, publish, peer events, stats) are bare ASGI apps routed by
path (realtime.routing), not Django views: each of Django's middlewares costs two thread hops per request,
which was most of a publish POST's CPU (docs/benchmarks.md). What those middlewares did for these paths is
done here once, for all of them: the Host check (ALLOWED_HOSTS), a body read with a size cap and a deadline,
`nosniff` and `no-store` on every answer, and errors as `{"detail", "code"[, "errors"]}`.
"""

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.http.request import split_domain_port, validate_host
from redis.exceptions import RedisError

from realtime import conf, limits

# ASGI's own types are dicts of whatever the server puts in them: Any is the honest type at this boundary
# (asgiref.typing's TypedDicts require keys the spec makes optional, such as `more_body`). The shapes are
# Django's (django.core.handlers.asgi): these apps and Django's take the same scope, receive and send.
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# On a refusal whose request may still be arriving: the server closes once the answer is out.
CLOSE = (b"connection", b"close")

JSON_HEADERS = (
    (b"content-type", b"application/json"),
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
)


logger = logging.getLogger(__name__)


class HttpError(Exception):
    """An answer other than success: status, stable code, a message that says how to fix it."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        errors: object = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.errors = errors
        self.headers = tuple(headers)

    def body(self) -> dict[str, object]:
        payload: dict[str, object] = {"detail": self.detail, "code": self.code}
        if self.errors is not None:
            payload["errors"] = self.errors
        return payload


class Request:
    """What an endpoint needs of an ASGI HTTP request; the body is read separately (`aread_body`)."""

    __slots__ = ("body", "headers", "method", "path", "query_string", "scope")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.query_string: bytes = scope.get("query_string", b"")
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            # As Django does: repeated headers are joined (a Cookie header stays one, joined by "; ").
            if name in headers:
                headers[name] = headers[name] + ("; " if name == "cookie" else ",") + value
            else:
                headers[name] = value
        self.headers = headers
        self.body = b""

    def header(self, name: str) -> str:
        return self.headers.get(name, "")

    @property
    def client_address(self) -> str:
        client = self.scope.get("client")
        return limits.client_address(client[0] if client else None, self.header("x-forwarded-for"))

    def query(self, name: str) -> list[str]:
        """Every value of a query parameter, in order."""
        return parse_qs(self.query_string.decode("latin-1")).get(name, [])


DATABASE_UNAVAILABLE = HttpError(
    503,
    "database_unavailable",
    "the database did not answer in time: retry shortly",
    headers=[(b"retry-after", b"5")],
)
REDIS_UNAVAILABLE = HttpError(
    503,
    "realtime_unavailable",
    "the real-time store (Redis) did not answer: retry shortly",
    headers=[(b"retry-after", b"1")],
)


def is_database_unavailable(exc: BaseException) -> bool:
    """A database that is locked, gone or out of pool connections: the request may succeed later (503)."""
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    # psycopg_pool is installed only with PostgreSQL support, and its PoolTimeout is no DatabaseError.
    return type(exc).__name__ == "PoolTimeout" and type(exc).__module__.startswith("psycopg_pool")


# Host header -> allowed, for the settings in force (tests override them): every request of a client sends the
# same Host, and Django's check (split, lower-case, a pattern match per ALLOWED_HOSTS entry) is per request.
# Bounded: a client sending made-up Hosts empties it, it never grows past HOST_CACHE_SIZE.
HOST_CACHE_SIZE = 256
_hosts_seen: dict[str, bool] = {}
_hosts_for: tuple[object, ...] = ()


def check_host(request: Request) -> None:
    """Refuse a Host outside ALLOWED_HOSTS (400), as Django's request.get_host() would."""
    global _hosts_seen, _hosts_for
    host = request.header("host")
    allowed = settings.ALLOWED_HOSTS
    debug = settings.DEBUG
    if _hosts_for != (debug, allowed) or len(_hosts_seen) >= HOST_CACHE_SIZE:
        # Compared by value against a copy: override_settings installs another list, a test may edit one in place.
        _hosts_seen, _hosts_for = {}, (debug, list(allowed))
    ok = _hosts_seen.get(host)
    if ok is None:
        ok = _hosts_seen[host] = _is_allowed_host(host, allowed, debug)
    if not ok:
        raise HttpError(400, "disallowed_host", "the Host header names no host this site serves (ALLOWED_HOSTS)")


def _is_allowed_host(host: str, allowed: list[str], debug: bool) -> bool:
    domain, _port = split_domain_port(host)
    if debug and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]  # Django's own default under DEBUG.
    return bool(domain) and validate_host(domain, allowed)


def check_method(request: Request, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if request.method not in allowed:
        raise HttpError(
            405,
            "method_not_allowed",
            f"{request.method} is not allowed here: use {' or '.join(allowed)}",
            headers=[(b"allow", ", ".join(allowed).encode())],
        )


class ClientGone(Exception):
    """The client disconnected before its request was read: nobody is left to answer."""


async def aread_body(request: Request, receive: Receive, limit: int, *, deadline_secs: float | None = None) -> bytes:
    """Read the request body into `request.body`, refusing it (413) as soon as it is known to pass `limit`.

    A declared Content-Length over the limit is refused before a byte is read; an undeclared one as soon as
    the bytes read pass it. A body not in within REQUEST_DEADLINE_SECS (`deadline_secs`) is refused with 408:
    one trickling client must not hold a request, and its memory, open for minutes. Both refusals close the
    connection, as the servers' own guards do (realtime.servers): the rest of a refused body may still come.
    Under Daphne its guard answers first (its deadline counts from the request line); under uvicorn these
    endpoints are not behind realtime.servers.guard, so this is their guard.
    """
    if deadline_secs is None:
        deadline_secs = float(conf.get("REQUEST_DEADLINE_SECS"))
    declared = request.header("content-length")
    if declared:
        if not declared.isdigit():
            raise HttpError(400, "bad_request", "the Content-Length header is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    task = asyncio.current_task()
    deadlines = _Deadlines.of_running_loop()
    deadlines.arm(task, deadline_secs)
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if not deadlines.expired(task):
            raise
        detail = f"the request did not arrive within {deadline_secs:g} s"
        raise HttpError(408, "request_timeout", detail, headers=[CLOSE]) from None
    finally:
        deadlines.disarm(task)
    request.body = b"".join(chunks)
    return request.body


class _Deadlines:
    """Cancels the request tasks whose body is late: one timer for all of a loop's requests, swept every
    SWEEP_SECS while any body is being read, instead of a timer armed and disarmed per request (asyncio.timeout
    was about 5 % of a single-event publish's CPU). A deadline is kept to within SWEEP_SECS."""

    SWEEP_SECS = 1.0
    _current: "_Deadlines | None" = None

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.due: dict[asyncio.Task[Any], float] = {}
        self.cancelled: set[asyncio.Task[Any]] = set()
        self.sweeping = False

    @classmethod
    def of_running_loop(cls) -> "_Deadlines":
        loop = asyncio.get_running_loop()
        current = cls._current
        if current is None or current.loop is not loop:
            current = cls._current = cls(loop)  # A new loop (tests): tasks of a closed one are gone with it.
        return current

    def arm(self, task: "asyncio.Task[Any] | None", secs: float) -> None:
        if task is None:
            return
        self.due[task] = self.loop.time() + secs
        if not self.sweeping:
            self.sweeping = True
            self.loop.call_later(self.SWEEP_SECS, self._sweep)

    def disarm(self, task: "asyncio.Task[Any] | None") -> None:
        if task is not None:
            self.due.pop(task, None)
            self.cancelled.discard(task)

    def expired(self, task: "asyncio.Task[Any] | None") -> bool:
        """Whether this sweeper cancelled `task`; if so the cancellation is withdrawn (the caller answers 408)."""
        if task is None or task not in self.cancelled:
            return False
        self.cancelled.discard(task)
        task.uncancel()
        return True

    def _sweep(self) -> None:
        now = self.loop.time()
        for task, deadline in list(self.due.items()):
            if deadline <= now:
                del self.due[task]
                self.cancelled.add(task)
                task.cancel()
        self.sweeping = bool(self.due)
        if self.sweeping:
            self.loop.call_later(self.SWEEP_SECS, self._sweep)


def _too_large(limit: int) -> HttpError:
    return HttpError(413, "too_large", f"the request body is larger than {limit:,} bytes", headers=[CLOSE])


def parse_json(body: bytes) -> object:
    """Strict JSON (UTF-8, no NaN or Infinity, no lone surrogates); raises HttpError 400 saying what is wrong.

    The client's value is `object`, not Any: a caller must check its shape (realtime.bodies) before use.
    """
    try:
        text = body.decode("utf-8")
        value = _DECODER.decode(text) if text and not text.isspace() else None
        # A lone surrogate ("\ud800") is valid JSON text but no character: it could never be encoded again. UTF-8
        # text cannot hold one, so only a \uD800-\uDFFF escape can make one: encoding everything again just to
        # find out cost as much as the parse itself.
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeError:
        raise HttpError(400, "parse_error", "the body is not valid UTF-8 JSON text") from None
    except RecursionError:
        raise HttpError(400, "parse_error", "the JSON body is nested too deeply") from None
    except ValueError as exc:
        raise HttpError(400, "parse_error", f"the body is not JSON: {exc}") from None
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


# One decoder for every request: json.loads with an option builds a decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def check_json_content_type(request: Request) -> None:
    """Refuse a body declared as anything but JSON (415): no other parser runs on these paths.

    A body with no Content-Type is read as JSON, as the documented curl one-liners send it.
    """
    content_type = request.header("content-type")
    if not content_type:
        return
    media_type, _, params = content_type.partition(";")
    charset = params.strip().lower()
    if media_type.strip().lower() != "application/json" or charset not in ("", "charset=utf-8"):
        raise HttpError(415, "unsupported_media_type", "send the body as application/json (UTF-8)")


async def asend_json(send: Send, status: int, payload: object, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def asend_error(send: Send, error: HttpError) -> None:
    await asend_json(send, error.status, error.body(), error.headers)


def _checked(request: Request) -> Request:
    check_host(request)
    return request


def endpoint(handler: Callable[[Request, Receive, Send], Awaitable[None]], *, hosts_checked: bool = True) -> ASGIApp:
    """Wrap an endpoint: build the Request, check the Host, answer any HttpError in the one JSON shape.

    Everything else propagates: the server logs it and answers 500, and the tests fail. `hosts_checked=False`
    only for probes (/healthz, /readyz): a load balancer asks by IP address, whatever ALLOWED_HOSTS says.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # No local holds the Request while the handler runs: a stream's handler runs for hours, and each
        # object its frames keep alive costs once per open stream.
        try:
            await handler(_checked(Request(scope)) if hosts_checked else Request(scope), receive, send)
        except HttpError as error:
            await asend_error(send, error)
        except limits.Limited as exc:
            retry_after = str(max(1, math.ceil(exc.retry_after_secs))).encode()
            await asend_error(send, HttpError(429, "rate_limited", str(exc), headers=[(b"retry-after", retry_after)]))
        except ClientGone:
            return
        except RedisError as exc:
            # Redis answering nothing where a door counts or caps (a rate limit, a stream cap): a clear 503,
            # never a 500. The dispatch paths answer their own 503 with what was and was not sent.
            logger.warning("redis unavailable on %s: %s", scope.get("path"), exc)
            await asend_error(send, REDIS_UNAVAILABLE)
        except Exception as exc:
            if not is_database_unavailable(exc):
                raise
            # The one database call of these endpoints is the caller's session or token lookup.
            logger.warning("database unavailable on %s: %s", scope.get("path"), exc)
            await asend_error(send, DATABASE_UNAVAILABLE)

    app.__name__ = handler.__name__
    app.__doc__ = handler.__doc__
    return app
