"""The real-time endpoints in the OpenAPI schema: they are bare ASGI apps, so drf-spectacular cannot see them.

A postprocessing hook (SPECTACULAR_SETTINGS) adds each one with its body, its answers and every status it
can give, in the schema's own terms; tests/realtime/test_openapi.py holds the statuses to the code's.
"""

from typing import TYPE_CHECKING, Any

from realtime.bodies import MAX_PUBLISH_BATCH
from realtime.topics import MAX_TOPIC_LENGTH

if TYPE_CHECKING:
    from drf_spectacular.generators import SchemaGenerator
    from rest_framework.request import Request

# The pieces of schema below are JSON that is only ever inserted into the schema: `object` values, not Any.

ERROR = {"$ref": "#/components/schemas/RealtimeError"}
_TOPIC = {"type": "string", "maxLength": MAX_TOPIC_LENGTH, "pattern": r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"}
_POSITION = {"type": "string", "pattern": r"^([0-9a-z]{1,32}:[0-9]{1,18}|:0)$", "example": "3f9a1c2e:17"}
_EVENT = {
    "type": "object",
    "required": ["topic", "type", "data"],
    "properties": {
        "topic": _TOPIC,
        "type": {"type": "string", "maxLength": 64, "pattern": r"^[a-z0-9_-]+(\.[a-z0-9_-]+)*$"},
        "data": {"description": "any JSON value; the SSE frame must stay under REALTIME_MAX_EVENT_BYTES"},
    },
}
SCHEMAS: dict[str, object] = {
    "RealtimeError": {
        "type": "object",
        "required": ["detail", "code"],
        "properties": {
            "detail": {"type": "string", "description": "what was wrong and how to fix it"},
            "code": {"type": "string", "description": "a stable code"},
            "errors": {"type": "object", "additionalProperties": True, "description": "field -> messages"},
        },
    },
    "PublishEvent": _EVENT,
    "PublishBatch": {
        "type": "object",
        "required": ["events"],
        "properties": {"events": {"type": "array", "items": _EVENT, "minItems": 1, "maxItems": MAX_PUBLISH_BATCH}},
    },
    "Published": {
        "type": "object",
        "required": ["ids"],
        "properties": {"ids": {"type": "array", "items": {"type": "string"}}},
    },
    "SubscriptionRequest": {
        "type": "object",
        "required": ["connection_id", "topics"],
        "properties": {
            "connection_id": {"type": "string", "maxLength": 300},
            "topics": {"type": "array", "items": _TOPIC, "minItems": 1},
            "since": {
                "type": "object",
                "description": (
                    "POST only: per topic (one of `topics`), the position of the last event the client has, as its "
                    "events carry it: the stream is sent what it missed since, in order, then live events; a topic "
                    "that cannot be resumed gets a `gap` frame"
                ),
                "additionalProperties": _POSITION,
            },
        },
    },
    "Subscription": {
        "type": "object",
        "required": ["connection_id", "topics"],
        "properties": {
            "connection_id": {"type": "string"},
            "topics": {"type": "array", "items": _TOPIC, "description": "the stream's topics now"},
            "positions": {
                "type": "object",
                "description": "where each newly subscribed topic stands: send it back in `since` after a reconnect",
                "additionalProperties": _POSITION,
            },
            "recovered": {"type": "array", "items": _TOPIC, "description": "topics of `since` resumed exactly"},
            "gaps": {"type": "array", "items": _TOPIC, "description": "topics of `since` that could not be resumed"},
        },
    },
}

# Every status each endpoint can answer besides success, with why.
COMMON = {400: "bad Host header or malformed request", 413: "body too large", 408: "body too slow"}
STATUSES: dict[tuple[str, str], dict[int, str]] = {
    ("/realtime/connect", "get"): {
        400: "an invalid topic or `since`, or a Host outside ALLOWED_HOSTS",
        401: "an Authorization header that is not a valid token, or a used or expired `ticket`",
        403: "a topic this stream may not read",
        405: "not GET",
        409: "more topics than REALTIME_MAX_TOPICS_PER_CONNECTION",
        429: (
            "too many streams opened from this address (`rate_limited`, REALTIME_RATE_LIMITS connect) or held open "
            "at once by this address or member (`too_many_streams`, REALTIME_MAX_STREAMS_PER_ADDRESS/_MEMBER)"
        ),
        503: "Redis is unreachable (`realtime_unavailable`)",
    },
    ("/realtime/subscriptions", "post"): {
        **COMMON,
        401: "an Authorization header that is not a valid token",
        403: "another member's stream or topic, or a failed CSRF check (session callers send X-CSRFToken)",
        404: "no open stream has this connection_id",
        405: "not POST or DELETE",
        409: "the stream would hold more than REALTIME_MAX_TOPICS_PER_CONNECTION topics",
        415: "not application/json",
        429: "too many subscription requests (REALTIME_RATE_LIMITS subscribe)",
        503: "Redis is unreachable (`realtime_unavailable`): nothing was subscribed",
    },
    ("/api/publish", "post"): {
        **COMMON,
        401: "no credentials, or an invalid token",
        403: "no realtime.publish_event permission, a failed CSRF check, or a control type ('reserved_type')",
        405: "not POST",
        415: "not application/json",
        429: "too many publishes (REALTIME_RATE_LIMITS publish)",
        503: "the dispatcher (Redis) is unreachable; nothing was sent",
    },
    ("/realtime/peer/events", "post"): {
        **COMMON,
        403: "not signed by a known peer data centre, or stale",
        405: "not POST",
        503: "the dispatcher (Redis) is unreachable",
    },
    ("/realtime/stats", "get"): {
        400: "a scope other than 'worker' or 'cluster'",
        401: "an invalid token",
        403: "not staff",
        405: "not GET",
    },
    ("/realtime/tickets", "post"): {
        **COMMON,
        401: "no credentials (`not_authenticated`), or an invalid token",
        403: "a failed CSRF check (session callers send X-CSRFToken)",
        405: "not POST",
        429: "too many streams opened (REALTIME_RATE_LIMITS connect)",
    },
    ("/metrics", "get"): {
        401: "an invalid token",
        403: "neither from REALTIME_METRICS_ALLOW nor staff",
        405: "not GET",
    },
}
STATUSES[("/realtime/subscriptions", "delete")] = STATUSES[("/realtime/subscriptions", "post")]
STATUSES[("/healthz", "get")] = {405: "not GET or HEAD"}
STATUSES[("/readyz", "get")] = {405: "not GET or HEAD"}


def _json(ref: str) -> dict[str, object]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


def _errors(path: str, method: str) -> dict[str, object]:
    return {
        str(status): {"description": why, "content": {"application/json": {"schema": ERROR}}}
        for status, why in sorted(STATUSES[(path, method)].items())
    }


def _operations() -> dict[str, object]:
    token_or_session: list[dict[str, list[str]]] = [{"tokenAuth": []}, {"cookieAuth": []}, {}]
    subscription: dict[str, object] = {
        "tags": ["realtime"],
        "security": token_or_session,
        "requestBody": {"required": True, "content": _json("SubscriptionRequest")},
    }
    return {
        "/realtime/connect": {
            "get": {
                "tags": ["realtime"],
                "operationId": "realtime_connect",
                "summary": "Open the client's one SSE stream",
                "security": token_or_session,
                "parameters": [
                    {
                        "name": "topics",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "comma-separated topics to subscribe at once",
                    },
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": (
                            "comma-separated `<topic>:<epoch>:<offset>` (an event's SSE id): resume those topics"
                        ),
                    },
                    {
                        "name": "ticket",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "a single-use ticket from POST /realtime/tickets: how an EventSource, which "
                        "cannot send headers, opens a token client's stream",
                    },
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": (
                            "sent by EventSource on reconnect: resumes the topic it names; without `since`, the "
                            "stream's other topics get a `gap` frame"
                        ),
                    },
                ],
                "responses": {
                    "200": {
                        "description": (
                            "the stream: `retry:`, `event: connected`, then missed events or `event: gap`, events "
                            "(SSE id `<topic>:<epoch>:<offset>`), keep-alive comments, and `event: closing` when "
                            "the worker stops"
                        ),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors("/realtime/connect", "get"),
                },
            }
        },
        "/realtime/subscriptions": {
            "post": {
                **subscription,
                "operationId": "realtime_subscribe",
                "summary": "Subscribe a live stream to topics",
                "responses": {
                    "200": {"description": "the stream's topics now", "content": _json("Subscription")},
                    **_errors("/realtime/subscriptions", "post"),
                },
            },
            "delete": {
                **subscription,
                "operationId": "realtime_unsubscribe",
                "summary": "Unsubscribe a live stream from topics",
                "responses": {
                    "200": {"description": "the stream's topics now", "content": _json("Subscription")},
                    **_errors("/realtime/subscriptions", "delete"),
                },
            },
        },
        "/api/publish": {
            "post": {
                "tags": ["realtime"],
                "operationId": "publish",
                "summary": "Publish one event, or a batch as {'events': [...]}",
                "security": [{"tokenAuth": []}, {"cookieAuth": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"$ref": "#/components/schemas/PublishEvent"},
                                    {"$ref": "#/components/schemas/PublishBatch"},
                                ]
                            },
                            "examples": {
                                "one": {"value": {"topic": "news.flash", "type": "news.posted", "data": {"id": 1}}},
                                "batch": {
                                    "value": {"events": [{"topic": "news.flash", "type": "news.posted", "data": {}}]}
                                },
                            },
                        }
                    },
                },
                "responses": {
                    "202": {"description": "every event handed to the dispatcher", "content": _json("Published")},
                    **_errors("/api/publish", "post"),
                },
            }
        },
        "/realtime/peer/events": {
            "post": {
                "tags": ["realtime"],
                "operationId": "realtime_peer_events",
                "summary": "Events forwarded by a peer data centre (HMAC-signed headers)",
                "security": [{}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                "responses": {
                    "200": {
                        "description": "how many were received and delivered",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors("/realtime/peer/events", "post"),
                },
            }
        },
        "/healthz": {
            "get": {
                "tags": ["operations"],
                "operationId": "healthz",
                "summary": "The process answers and its event loop turns (unauthenticated, any Host)",
                "security": [{}],
                "responses": {
                    "200": {"description": "alive", "content": {"application/json": {"schema": {"type": "object"}}}},
                    **_errors("/healthz", "get"),
                },
            }
        },
        "/readyz": {
            "get": {
                "tags": ["operations"],
                "operationId": "readyz",
                "summary": "Database, Redis and this worker's realtime side can serve (unauthenticated, any Host)",
                "security": [{}],
                "responses": {
                    "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "503": {
                        "description": "a part is not ready: `checks` gives each part's state",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **_errors("/readyz", "get"),
                },
            }
        },
        "/realtime/stats": {
            "get": {
                "tags": ["realtime"],
                "operationId": "realtime_stats",
                "summary": "This worker's counters, or every worker's (staff)",
                "security": [{"tokenAuth": []}, {"cookieAuth": []}],
                "parameters": [
                    {
                        "name": "scope",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["worker", "cluster"]},
                        "description": "`worker` (default): the worker that answers; `cluster`: every live worker, "
                        "their totals and the busiest topics",
                    }
                ],
                "responses": {
                    "200": {"description": "counters", "content": {"application/json": {"schema": {"type": "object"}}}},
                    **_errors("/realtime/stats", "get"),
                },
            }
        },
        "/realtime/tickets": {
            "post": {
                "tags": ["realtime"],
                "operationId": "realtime_ticket",
                "summary": "A single-use stream ticket (30 s) for GET /realtime/connect?ticket=",
                "security": token_or_session[:2],
                "responses": {
                    "201": {
                        "description": "the ticket, and how many seconds it is valid",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["ticket", "expires_in"],
                                    "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    **_errors("/realtime/tickets", "post"),
                },
            }
        },
        "/metrics": {
            "get": {
                "tags": ["realtime"],
                "operationId": "metrics",
                "summary": "Every worker's figures for Prometheus (scraper network or staff)",
                "security": [{"tokenAuth": []}, {}],
                "responses": {
                    "200": {
                        "description": "the Prometheus text format, one series per worker",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_errors("/metrics", "get"),
                },
            }
        },
    }


def add_realtime_endpoints(
    result: dict[str, Any], generator: "SchemaGenerator", request: "Request | None", public: bool
) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (its signature; `generator` and `request` are its objects).

    `result` is drf-spectacular's whole schema, edited in place at any depth: Any is that JSON boundary.
    """
    result.setdefault("paths", {}).update(_operations())
    result.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    return result
