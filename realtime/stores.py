"""Where shared state lives: in this process on the embedded default, in Redis when `REDIS_URL` is set.

The one way into Redis for the app's own keys (the census, peer de-duplication, presence, like windows; the
channel layer has its own connection pool, configured from the same settings):
- `REDIS_URL` and `REDIS_KEY_PREFIX` are read here only. Every key starts with the prefix (`key(...)`), so
  two deployments can share one Redis; the channel layer's groups use the same prefix.
- REDIS_URL may name several shards, or primaries found through Sentinel (livesite/redisconf.py). `url()` is
  the home shard (state that needs one place for the cluster), `server_for(key)` the shard of a per-key state.
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

from livesite import redisconf

if TYPE_CHECKING:
    import redis
    import redis.asyncio as aioredis

T = TypeVar("T")

CONNECT_TIMEOUT_SECS = 2.0
# Above the longest blocking command the app sends itself (none block); a dead server fails within this.
SOCKET_TIMEOUT_SECS = 5.0


def shards() -> list[redisconf.Shard]:
    """The shards REDIS_URL names (the first is home); [] on the embedded default."""
    text = str(getattr(settings, "REDIS_URL", "") or "")
    if _parsed[0] != text:
        _parsed[:] = [text, redisconf.parse(text)]
    return list(_parsed[1])


_parsed: list[Any] = ["", []]


def url() -> str:
    """The home shard of this deployment's shared state (`servers()[0]`); empty on the embedded default."""
    found = shards()
    return found[0].spec if found else ""


def servers() -> list[str]:
    """Every shard, each as a server to pass to `aclient`/`client`."""
    return [shard.spec for shard in shards()]


def server_for(key: str, made_for: str | None = None) -> str:
    """The shard that holds the per-key state `key` (spread evenly, stable across processes).

    `made_for`: the server a store was built for. The deployment's own stores are built for the home shard
    and spread; a store built for another server (a test's, a tool's) keeps to that server."""
    if made_for and made_for != url():
        return made_for
    found = shards()
    return found[redisconf.shard_index(key, len(found))].spec if found else ""


def by_server(keys: list[str], made_for: str | None = None) -> dict[str, list[int]]:
    """The indexes of `keys` grouped by the shard each lives on (`server_for`): one round trip per shard."""
    grouped: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        grouped.setdefault(server_for(key, made_for), []).append(index)
    return grouped


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
    """The async client for `server` (default: the home shard) bound to the running event loop."""
    address = server or url()
    per_loop = _async_clients.setdefault(asyncio.get_running_loop(), {})
    found = per_loop.get(address)
    if found is None:
        found = per_loop[address] = _build(address, asynchronous=True)
    return found


def client(server: str | None = None) -> "redis.Redis":
    """The process's sync client for `server` (default: the home shard); thread-safe."""
    address = server or url()
    with _lock:
        found = _sync_clients.get(address)
        if found is None:
            found = _sync_clients[address] = _build(address, asynchronous=False)
        return found


def _build(address: str, *, asynchronous: bool) -> Any:
    # Imported here: only deployments with Redis need them.
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel
    from redis.sentinel import Sentinel

    (shard,) = redisconf.parse(address)
    retry = AsyncRetry(*_RETRY) if asynchronous else Retry(*_RETRY)
    if not shard.master:
        cls = aioredis.Redis if asynchronous else redis.Redis
        return cls.from_url(shard.url, retry=retry, **_OPTIONS)
    # Through Sentinel: every new connection asks the sentinels for the current primary, so a failover is
    # followed without a restart; while there is none, commands raise MasterNotFoundError (a ConnectionError).
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": CONNECT_TIMEOUT_SECS}
    if shard.sentinel_password is not None:
        sentinel_kwargs["password"] = shard.sentinel_password
    options: dict[str, Any] = {"db": shard.db, "password": shard.password, "retry": retry, **_OPTIONS}
    # redis-py's Sentinel classes are untyped.
    sentinel_class: Any = AsyncSentinel if asynchronous else Sentinel
    manager = sentinel_class(list(shard.sentinels), sentinel_kwargs=sentinel_kwargs)
    return manager.master_for(shard.master, redis_class=aioredis.Redis if asynchronous else redis.Redis, **options)


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
    _parsed[:] = ["", []]


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("REDIS_URL", "REDIS_KEY_PREFIX"):
        reset_all()


# Connected here, not in an AppConfig: any code that imports a store gets the reset with it.
setting_changed.connect(_on_setting_changed, dispatch_uid="realtime.stores.settings")
