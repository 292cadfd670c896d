"""Where shared state lives: in this process on the embedded default, in Redis when `REDIS_URL` is set.

The one way into Redis for the app's own keys (the census, peer de-duplication, presence, like windows; the
channel layer has its own connection pool, configured from the same settings):
- `REDIS_URL` and `REDIS_KEY_PREFIX` are read here only. Every key starts with the prefix (`key(...)`), so
  two deployments can share one Redis; the channel layer's groups use the same prefix.
- `aclient()` hands out the async client of the running event loop (a redis-py asyncio client is bound to
  the loop that made it: tests and management commands run several loops), `client()` the process's sync
  client (a thread-safe pool). Both have bounded timeouts: a request must not hang on a dead Redis.
- `Slot` is the one memory-or-Redis pattern: a store of a kind per process, built on first use from the
  current settings, forgotten when they change.
"""

import asyncio
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from django.conf import settings
from django.core.signals import setting_changed
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

T = TypeVar("T")

CONNECT_TIMEOUT_SECS = 2.0
# Above the longest blocking command the app sends itself (none block); a dead server fails within this.
SOCKET_TIMEOUT_SECS = 5.0


def url() -> str:
    """The Redis server of this deployment's shared state; empty on the embedded default."""
    return str(getattr(settings, "REDIS_URL", "") or "")


def prefix() -> str:
    return str(getattr(settings, "REDIS_KEY_PREFIX", "livesite") or "livesite")


def key(*parts: object) -> str:
    """A key of this deployment: `<REDIS_KEY_PREFIX>:<part>:<part>...`."""
    return ":".join([prefix(), *(str(part) for part in parts)])


# A connection that died with a Redis restart is replaced and the command retried, once or twice.
_RETRY = (ExponentialBackoff(cap=0.2, base=0.02), 2)
_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": CONNECT_TIMEOUT_SECS,
    "socket_timeout": SOCKET_TIMEOUT_SECS,
    "retry_on_error": [RedisConnectionError, RedisTimeoutError],
}

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, aioredis.Redis]]" = (
    weakref.WeakKeyDictionary()
)
_sync_clients: "dict[str, redis.Redis]" = {}
_lock = threading.Lock()


def aclient(server: str | None = None) -> "aioredis.Redis":
    """The async client for `server` (default: REDIS_URL) bound to the running event loop."""
    import redis.asyncio as aioredis  # Imported here: only deployments with Redis need it.

    address = server or url()
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(address)
    if found is None:
        found = per_loop[address] = aioredis.Redis.from_url(address, retry=AsyncRetry(*_RETRY), **_OPTIONS)
    return found


def client(server: str | None = None) -> "redis.Redis":
    """The process's sync client for `server` (default: REDIS_URL); thread-safe."""
    import redis

    address = server or url()
    with _lock:
        found = _sync_clients.get(address)
        if found is None:
            found = _sync_clients[address] = redis.Redis.from_url(address, retry=Retry(*_RETRY), **_OPTIONS)
        return found


_slots: "weakref.WeakSet[Slot[object]]" = weakref.WeakSet()


class Slot(Generic[T]):
    """One store of a kind per process: `memory()` on the embedded default, `redis(url)` with REDIS_URL set."""

    def __init__(self, *, memory: Callable[[], T], redis: Callable[[str], T]) -> None:
        self._memory = memory
        self._redis = redis
        self._value: T | None = None
        self._lock = threading.Lock()
        _slots.add(self)  # type: ignore[arg-type]

    def get(self) -> T:
        value = self._value
        if value is None:
            # Request threads race to build it; two in-memory stores would each keep half the state.
            with self._lock:
                if self._value is None:
                    server = url()
                    self._value = self._redis(server) if server else self._memory()
                value = self._value
        return value

    def reset(self) -> None:
        """Forget the store: the next use builds it from the current settings."""
        self._value = None


def reset_all() -> None:
    """Forget every store and client (settings changed, tests)."""
    for slot in list(_slots):
        slot.reset()
    with _lock:
        _sync_clients.clear()
    _async_clients.clear()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("REDIS_URL", "REDIS_KEY_PREFIX"):
        reset_all()


# Connected here, not in an AppConfig: any code that imports a store gets the reset with it.
setting_changed.connect(_on_setting_changed, dispatch_uid="realtime.stores.settings")
