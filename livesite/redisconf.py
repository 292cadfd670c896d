"""What `REDIS_URL` may say: one server, several shards, or primaries found through Redis Sentinel.

- `redis://host:6379/0`: one server (also `rediss://` and `unix://`).
- `redis://a:6379/0,redis://b:6379/0`: shards. The channel layer spreads its keys over them with its own
  consistent hash (worker channels, topic groups and the history beside each group); the app's per-key state
  (rate-limit windows, tickets, peer de-duplication, the census) follows `shard_for(key)`; the state that needs
  one place for the whole cluster (presence deadlines, stream caps, typing marks, like windows, metrics) lives
  on the first shard, the "home" shard.
- `sentinel://h1:26379,h2:26379,h3:26379/primary1[,primary2...]?db=0&password=...&sentinel_password=...`:
  one shard per primary name, each found through the listed sentinels. Clients ask the sentinels for the
  current primary whenever they reconnect, so a failover needs no restart.

Pure Python (settings import it before Django is set up); the clients are built in `realtime.stores`.
"""

import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SENTINEL_SCHEME = "sentinel://"


class InvalidRedisUrl(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    """One Redis that holds a share of the keys: a server by URL, or a primary by name through sentinels."""

    url: str = ""
    master: str = ""
    sentinels: tuple[tuple[str, int], ...] = ()
    db: int = 0
    password: str | None = None
    sentinel_password: str | None = None

    @property
    def spec(self) -> str:
        """This shard alone, in REDIS_URL's syntax (`parse(spec) == [self]`): the key of client caches."""
        if not self.master:
            return self.url
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        query = [f"db={self.db}"]
        if self.password is not None:
            query.append(f"password={self.password}")
        if self.sentinel_password is not None:
            query.append(f"sentinel_password={self.sentinel_password}")
        return f"{SENTINEL_SCHEME}{hosts}/{self.master}?{'&'.join(query)}"

    def __str__(self) -> str:
        # Logs and error messages: never a password.
        if not self.master:
            parts = urlsplit(self.url)
            return self.url.replace(f":{parts.password}@", ":***@") if parts.password else self.url
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        return f"{SENTINEL_SCHEME}{hosts}/{self.master} (db {self.db})"


def parse(text: str) -> list[Shard]:
    """The shards REDIS_URL names, in order (the first is the home shard); [] when it is empty."""
    text = text.strip()
    if not text:
        return []
    if text.startswith(SENTINEL_SCHEME):
        return _parse_sentinel(text)
    shards = []
    for part in text.split(","):
        part = part.strip()
        if not part.startswith(("redis://", "rediss://", "unix://")):
            raise InvalidRedisUrl(f"REDIS_URL: {part!r} is not a redis://, rediss:// or unix:// address")
        shards.append(Shard(url=part))
    if len({shard.url for shard in shards}) != len(shards):
        raise InvalidRedisUrl("REDIS_URL names the same server twice: each shard must be a different server")
    return shards


def _parse_sentinel(text: str) -> list[Shard]:
    rest = text[len(SENTINEL_SCHEME) :]
    hosts_text, _, tail = rest.partition("/")
    masters_text, _, query_text = tail.partition("?")
    sentinels = []
    for host_port in hosts_text.split(","):
        host, _, port = host_port.strip().rpartition(":")
        if not host or not port.isdigit():
            raise InvalidRedisUrl(f"REDIS_URL: sentinel {host_port!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    masters = [unquote(name.strip()) for name in masters_text.split(",") if name.strip()]
    if not masters:
        raise InvalidRedisUrl("REDIS_URL: a sentinel:// address names its primaries after the hosts: .../mymaster")
    query = {name: values[-1] for name, values in parse_qs(query_text).items()}
    unknown = set(query) - {"db", "password", "sentinel_password"}
    if unknown:
        raise InvalidRedisUrl(f"REDIS_URL: unknown sentinel option(s) {', '.join(sorted(unknown))}")
    db = query.get("db", "0")
    if not db.isdigit():
        raise InvalidRedisUrl(f"REDIS_URL: db={db!r} is not a number")
    if len(set(masters)) != len(masters):
        raise InvalidRedisUrl("REDIS_URL names the same primary twice: each shard must be a different primary")
    return [
        Shard(
            master=master,
            sentinels=tuple(sentinels),
            db=int(db),
            password=query.get("password"),
            sentinel_password=query.get("sentinel_password"),
        )
        for master in masters
    ]


def shard_index(key: str, count: int) -> int:
    """Which of `count` shards holds the app key `key`: stable across processes and restarts (CRC-32)."""
    if count <= 1:
        return 0
    return zlib.crc32(key.encode()) % count


def layer_host(shard: Shard, **options: Any) -> dict[str, Any]:
    """channels-redis' host entry for `shard` with connection `options` (pool size, timeouts, retries)."""
    if not shard.master:
        return {"address": shard.url, **options}
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": options.get("socket_connect_timeout", 2.0)}
    if shard.sentinel_password is not None:
        sentinel_kwargs["password"] = shard.sentinel_password
    host: dict[str, Any] = {
        "master_name": shard.master,
        "sentinels": list(shard.sentinels),
        "sentinel_kwargs": sentinel_kwargs,
        "db": shard.db,
        **options,
    }
    if shard.password is not None:
        host["password"] = shard.password
    return host
