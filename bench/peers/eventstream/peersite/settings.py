"""Settings of the peer: django-eventstream on Daphne, several processes sharing one Redis.

Configured as django-eventstream's README says for "Multiple instances and scaling" with Redis:
`EVENTSTREAM_REDIS` set, so `send_event` publishes on Redis and every process's listener receives it.
Everything else is left at the library's defaults (no event storage: events are not persisted, like
livesite's). The project is as lean as Django allows, which favours the peer: no middleware, no database.

Environment (set by bench/harness.py): PEER_REDIS_HOST, PEER_REDIS_PORT, PEER_REDIS_DB, PEER_PUBLISH_SECRET,
PEER_SECRET_KEY, PEER_LOG_LEVEL.
"""

import os

SECRET_KEY = os.environ.get("PEER_SECRET_KEY", "bench-peer-development-key")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = ["daphne", "django_eventstream"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "peersite.urls"
ASGI_APPLICATION = "peersite.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

EVENTSTREAM_REDIS = {
    "host": os.environ.get("PEER_REDIS_HOST", "127.0.0.1"),
    "port": int(os.environ.get("PEER_REDIS_PORT", "6379")),
    "db": int(os.environ.get("PEER_REDIS_DB", "0")),
}

# Shared secret of the benchmark's publisher (header X-Bench-Secret on POST /publish and GET /stats).
PEER_PUBLISH_SECRET = os.environ.get("PEER_PUBLISH_SECRET", "")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("PEER_LOG_LEVEL", "WARNING")},
}
