"""Django settings for livesite: the only module that reads environment variables."""

import os
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from livesite import redisconf

BASE_DIR = Path(__file__).resolve().parent.parent


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _rates(value: str) -> dict[str, str]:
    from realtime.conf import DEFAULTS  # Imported here: a pure table, no Django needed.

    rates = dict(DEFAULTS["RATE_LIMITS"])
    for item in filter(None, (part.strip() for part in value.split(","))):
        scope, sep, rate = item.partition("=")
        if not sep or scope.strip() not in rates:
            raise ValueError(f"REALTIME_RATE_LIMITS entry {item!r} is not scope=rate with a scope of {sorted(rates)}")
        rates[scope.strip()] = rate.strip()
    return rates


def _peers(value: str, self_name: str) -> dict[str, str]:
    from realtime.peers import parse_peers  # Imported here: pure module, no Django needed.

    return parse_peers(value, self_name=self_name)


DEBUG = _env_bool("DEBUG", False)
# The embedded default is meant to run out of the box; production sets SECRET_KEY (`check --deploy` fails with
# livesite.E001 while this development key is in use).
DEVELOPMENT_SECRET_KEY = "livesite-insecure-development-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
# The address the public reaches the site at, e.g. https://live.example.org (usually a proxy's): its host is
# allowed, it is a trusted CSRF origin, and when it is https the cookies are secure, plain HTTP is redirected
# and HSTS is on (each still overridable below). Unset: the embedded default, served as it is reached.
PUBLIC_ORIGIN = os.environ.get("PUBLIC_ORIGIN", "").strip().rstrip("/")
_public = urlsplit(PUBLIC_ORIGIN) if PUBLIC_ORIGIN else None
if _public is not None:
    if _public.scheme not in ("http", "https") or not _public.hostname or _public.path:
        raise ImproperlyConfigured(f"PUBLIC_ORIGIN {PUBLIC_ORIGIN!r} is not scheme://host[:port] (http or https)")
    ALLOWED_HOSTS.append(_public.hostname)
_https = _public is not None and _public.scheme == "https"

# Behind a TLS-terminating proxy (nginx): with TRUST_PROXY_HEADERS, Django takes the scheme from
# X-Forwarded-Proto and the host from X-Forwarded-Host, so a browser's `Origin: https://site` passes the CSRF
# check (without it, signing in through the proxy failed with 403 "Origin checking failed"). Only when the
# workers listen on loopback or a unix socket: anyone who reaches them directly could forge these headers.
TRUST_PROXY_HEADERS = _env_bool("TRUST_PROXY_HEADERS", False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
# Origins (scheme://host[:port]) a form or an API call may come from besides the site's own, e.g. a proxy
# whose public address differs from the Host the workers see.
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]
if PUBLIC_ORIGIN:
    CSRF_TRUSTED_ORIGINS.append(PUBLIC_ORIGIN)
# Served over HTTPS: session and CSRF cookies only over HTTPS.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _env_bool("SECURE_COOKIES", _https)
# HTTPS only: redirect plain HTTP (the proxy usually does; behind one, TRUST_PROXY_HEADERS tells Django the
# request already was HTTPS), and tell browsers to use nothing else for this long (0: no HSTS header).
SECURE_SSL_REDIRECT = _env_bool("SECURE_SSL_REDIRECT", _https)
SECURE_HSTS_SECONDS = _env_int("SECURE_HSTS_SECONDS", 31_536_000 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _https)
# On by default with https (check --deploy warns without it); false if the domain is not for the preload list.
SECURE_HSTS_PRELOAD = _env_bool("SECURE_HSTS_PRELOAD", _https)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "realtime",
    "likes",
    "presence",
    "messaging",
    "web",
    "livesite",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "livesite.urls"
ASGI_APPLICATION = "livesite.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=_env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and _env_bool("DATABASE_POOL", True):
    # Under ASGI every sync request runs in a fresh thread, so CONN_MAX_AGE never reuses a connection: each
    # request paid a new PostgreSQL backend (3.4 ms of server CPU against 0.03 ms on a kept connection,
    # docs/benchmarks.md). A process-wide pool keeps them.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    # A request waits this long for a pool connection, then answers 503 (livesite.errors). It is also what every
    # request costs while PostgreSQL is down (the pool has nothing to give): seconds, not a client's patience
    # (tests/system/test_database_faults.py).
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 2,
        "max_size": _env_int("DATABASE_POOL_MAX", 20),
        "timeout": _env_float("DATABASE_POOL_TIMEOUT_SECS", 3),
    }
    # A statement waiting for a lock gives up before a request waiting for a pool connection does, so a locked
    # table answers 503 (livesite.errors) instead of holding every connection of the pool.
    DATABASES["default"]["OPTIONS"].setdefault(
        "options", f"-c lock_timeout={_env_int('DATABASE_LOCK_TIMEOUT_MS', 2000)}"
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several Daphne threads write at once (likes); wait for the lock instead of failing at once, but not for
    # ever: past this a request answers 503 with Retry-After (livesite.errors).
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = _env_int("DATABASE_LOCK_TIMEOUT_MS", 5000) / 1000
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    DATABASES["default"]["OPTIONS"]["init_command"] = "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
# Where collectstatic writes (and nginx may serve from): STATIC_ROOT in the environment, else ./staticfiles.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT") or BASE_DIR / "staticfiles")
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
# Without collectstatic (tests, `make run`), WhiteNoise serves straight from the finders.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# Without collectstatic there is no STATIC_ROOT; WhiteNoise serves from the finders then, and says so at
# every start unless told it is expected.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
# Hashed, compressed names (cache-busting) need `collectstatic` first; the embedded default serves the files
# as they are from the finders. STATIC_HASHED=true for deployments that run collectstatic: the choice is
# configuration, not a guess from files on disk (the manifest is only ever written by this storage).
if not _env_bool("STATIC_HASHED", False):
    STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"

# Shared state (channel layer, presence, census, like windows, peer de-duplication) lives in this Redis when set;
# else in this one process (the embedded default). Every key starts with REDIS_KEY_PREFIX, so two deployments can
# share a Redis (realtime/stores.py).
REDIS_URL = os.environ.get("REDIS_URL", "")
try:
    redisconf.parse(REDIS_URL)
except redisconf.InvalidRedisUrl as exc:
    raise ImproperlyConfigured(str(exc)) from None
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "livesite")


def _redis_retry() -> dict[str, object]:
    # Imported here: settings must load without redis-py on the embedded default.
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return {
        "retry": Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


REDIS_RETRY = _redis_retry() if REDIS_URL else {}
REALTIME_CHANNEL_CAPACITY = _env_int("REALTIME_CHANNEL_CAPACITY", 100_000)
REALTIME_LEASE_SECS = _env_float("REALTIME_LEASE_SECS", 60)

if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "realtime.layers.ShardedRedisChannelLayer",
            "CONFIG": {
                # redis-py 8 raises instead of waiting past its pool size (FIELD-NOTES): size it deliberately.
                # One entry per shard (livesite/redisconf.py: several servers, or primaries via Sentinel).
                "hosts": [
                    redisconf.layer_host(
                        shard,
                        max_connections=_env_int("REDIS_MAX_CONNECTIONS", 1000),
                        # channels-redis blocks 5 s on Redis for a message; redis-py's 5 s socket timeout
                        # would fire just as Redis answers "none yet", breaking the receive loop.
                        socket_timeout=15,
                        socket_connect_timeout=2,
                        # After a Redis restart every pooled connection is dead; without a retry, each one
                        # failed one request (a subscription answered 503 with Redis back for seconds).
                        **REDIS_RETRY,
                    )
                    for shard in redisconf.parse(REDIS_URL)
                ],
                # The core layer's defaults (100 messages, day-long groups) silently drop and leak: the
                # worker channel carries every event for the process, and groups are leases.
                "capacity": REALTIME_CHANNEL_CAPACITY,
                "expiry": 60,
                "group_expiry": max(1, int(REALTIME_LEASE_SECS)),
                "prefix": REDIS_KEY_PREFIX,
            },
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            "CONFIG": {
                "capacity": REALTIME_CHANNEL_CAPACITY,
                "expiry": 60,
                "group_expiry": max(1, int(REALTIME_LEASE_SECS)),
            },
        }
    }

REALTIME = {
    "KEEPALIVE_SECS": _env_float("REALTIME_KEEPALIVE_SECS", 15),
    "LEASE_SECS": REALTIME_LEASE_SECS,
    "MAX_TOPICS_PER_CONNECTION": _env_int("REALTIME_MAX_TOPICS_PER_CONNECTION", 128),
    "OPEN_NAMESPACES": [n.strip() for n in os.environ.get("REALTIME_OPEN_NAMESPACES", "").split(",") if n.strip()],
    # "scope=rate,...", e.g. "like=20/s,sign_in=5/m" or "connect=0" (off); unnamed scopes keep their defaults.
    "RATE_LIMITS": _rates(os.environ.get("REALTIME_RATE_LIMITS", "")),
    "MAX_STREAMS": {
        "address": _env_int("REALTIME_MAX_STREAMS_PER_ADDRESS", 100),
        "member": _env_int("REALTIME_MAX_STREAMS_PER_MEMBER", 20),
    },
    "MAX_PENDING_FRAMES": _env_int("REALTIME_MAX_PENDING_FRAMES", 1000),
    "RETRY_MS": _env_int("REALTIME_RETRY_MS", 2000),
    "REQUEST_DEADLINE_SECS": _env_float("REALTIME_REQUEST_DEADLINE_SECS", 30),
    "MAX_EVENT_BYTES": _env_int("REALTIME_MAX_EVENT_BYTES", 65_536),
    "FLUSH_MS": _env_float("REALTIME_FLUSH_MS", 20),
    "TOKEN_CACHE_SECS": _env_float("REALTIME_TOKEN_CACHE_SECS", 10),
    "RPC_TIMEOUT_SECS": _env_float("REALTIME_RPC_TIMEOUT_SECS", 3),
    "DATA_CENTER": os.environ.get("DATA_CENTER", "dc1"),
    "HEARTBEAT_SECS": _env_float("PRESENCE_HEARTBEAT_SECS", 30),
    # A live video's viewer count: the streams subscribed to its likes.
    "CENSUS_TOPICS": r"video\.[0-9]+\.likes",
    "CENSUS_SECS": _env_float("REALTIME_CENSUS_SECS", 5),
    "PEERS": _peers(os.environ.get("REALTIME_PEERS", ""), os.environ.get("DATA_CENTER", "dc1")),
    "PEER_SECRET": os.environ.get("REALTIME_PEER_SECRET", ""),
    "PEER_QUEUE_CAPACITY": _env_int("REALTIME_PEER_QUEUE_CAPACITY", 10_000),
    "PEER_TIMEOUT_SECS": _env_float("REALTIME_PEER_TIMEOUT_SECS", 5),
    "METRICS_ALLOW": [
        n.strip() for n in os.environ.get("REALTIME_METRICS_ALLOW", "127.0.0.0/8,::1/128").split(",") if n.strip()
    ],
    "HISTORY_SIZE": _env_int("REALTIME_HISTORY_SIZE", 1000),
    "HISTORY_SECS": _env_float("REALTIME_HISTORY_SECS", 300),
    "HISTORY_META_SECS": _env_float("REALTIME_HISTORY_META_SECS", 86_400),
    "HISTORY_EXCLUDE": os.environ.get("REALTIME_HISTORY_EXCLUDE", ""),
    "REORDER_MS": _env_float("REALTIME_REORDER_MS", 100),
}

PRESENCE = {
    "PUBLIC": _env_bool("PRESENCE_PUBLIC", False),
    "HEARTBEAT_SECS": REALTIME["HEARTBEAT_SECS"],
    "OFFLINE_AFTER_SECS": _env_float("PRESENCE_OFFLINE_AFTER_SECS", 60),
}

# What `seed_demo` sets as the password of its members (admin, alice, bob, carol).
DEMO_PASSWORD = os.environ.get("DEMO_PASSWORD", "livesite-demo")

LIKES = {
    "COALESCE_MS": _env_int("LIKES_COALESCE_MS", 250),
}

# Conversations, typing indicators and seen receipts (messaging/conf.py has the defaults and what each means).
MESSAGING = {
    "MAX_PARTICIPANTS": _env_int("MESSAGING_MAX_PARTICIPANTS", 100),
    "TYPING_THROTTLE_SECS": _env_float("MESSAGING_TYPING_THROTTLE_SECS", 2),
    "TYPING_TIMEOUT_SECS": _env_float("MESSAGING_TYPING_TIMEOUT_SECS", 6),
    "RECEIPT_COALESCE_MS": _env_int("MESSAGING_RECEIPT_COALESCE_MS", 300),
    # "scope=rate,...", e.g. "message=10/s,typing=0"; checked by messaging's system checks.
    "RATE_LIMITS": os.environ.get("MESSAGING_RATE_LIMITS", ""),
    # Per-worker cache of participants (messaging.access); 0 entries: a query per read check.
    "ACCESS_CACHE_SIZE": _env_int("MESSAGING_ACCESS_CACHE_SIZE", 10_000),
    "ACCESS_CACHE_SECS": _env_float("MESSAGING_ACCESS_CACHE_SECS", 60),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "realtime.tokens.CachedTokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticatedOrReadOnly"],
    "DEFAULT_PARSER_CLASSES": [
        "livesite.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "livesite.errors.json_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "livesite API",
    "DESCRIPTION": "Live videos, likes, comments, presence and the real-time publish/subscribe API.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files from this site (drf-spectacular-sidecar), not a CDN: /api/docs works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "realtime.openapi.add_realtime_endpoints",
    ],
}

# LOG_FORMAT=json: one JSON object per line; both formats carry the request id (livesite/logs.py).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT {LOG_FORMAT!r} is 'plain' or 'json'")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "livesite.logs.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {"()": "livesite.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
