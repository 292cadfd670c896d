"""Cross-data-centre dispatch: each publish is forwarded once to every peer data centre, never further.

A full mesh, as LinkedIn's dispatchers did it: the data centre where an event is published delivers it
locally and POSTs it to each peer's `/realtime/peer/events`; a peer delivers what it receives to its own
subscribers and never forwards it again, so there are no loops whatever the number of data centres.
Requests are signed with HMAC-SHA256 over the timestamp, the sender's name and the body, with a shared
secret; a peer rejects unsigned, forged or stale (replayed) requests, and drops event ids it has already
delivered, so a retried batch is delivered once.

Forwarding never blocks local delivery: events wait in a bounded queue per peer, a single task per peer
sends them in batches with bounded retries, and whatever is dropped (queue full, retries exhausted) is
counted and logged.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from realtime import stores
from realtime.events import Event, InvalidEvent, Template, check_type, encode_template
from realtime.topics import InvalidTopic, check_topic

logger = logging.getLogger(__name__)

PEER_PATH = "/realtime/peer/events"
HEADER_DC = "X-Livesite-DC"
HEADER_TIMESTAMP = "X-Livesite-Timestamp"
HEADER_SIGNATURE = "X-Livesite-Signature"
MAX_CLOCK_SKEW_SECS = 60.0
# Longer than the replay window, so a replayed request inside the window finds its ids already seen.
SEEN_IDS_TTL_SECS = 10 * MAX_CLOCK_SKEW_SECS
MAX_BATCH = 200
RETRY_DELAYS_SECS = (0.2, 1.0, 3.0)


class InvalidPeerRequest(Exception):
    """A peer request that is not signed by a known data centre, or is stale; the message says why."""


def parse_peers(value: str, *, self_name: str) -> dict[str, str]:
    """`dc2=http://host:port,dc3=...` -> {"dc2": "http://host:port", ...}; raises ValueError saying why."""
    peers: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, sep, url = item.partition("=")
        name, url = name.strip(), url.strip().rstrip("/")
        if not sep or not name or not url.startswith(("http://", "https://")):
            raise ValueError(f"REALTIME_PEERS entry {item!r} is not name=http(s)://host:port")
        if name == self_name:
            raise ValueError(f"REALTIME_PEERS lists this data centre ({name}) as its own peer")
        if name in peers:
            raise ValueError(f"REALTIME_PEERS lists {name} twice")
        peers[name] = url
    return peers


def signature(secret: str, timestamp: str, sender: str, body: bytes) -> str:
    message = timestamp.encode() + b"." + sender.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, sender: str, body: bytes, now: float) -> dict[str, str]:
    timestamp = f"{now:.3f}"
    return {
        HEADER_DC: sender,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: signature(secret, timestamp, sender, body),
        "Content-Type": "application/json",
    }


def verify(headers: Any, body: bytes, *, secret: str, known: set[str], now: float) -> str:
    """Return the sending data centre's name if the request is genuine and fresh, else raise InvalidPeerRequest."""
    sender = headers.get(HEADER_DC, "")
    timestamp = headers.get(HEADER_TIMESTAMP, "")
    given = headers.get(HEADER_SIGNATURE, "")
    if not secret:
        raise InvalidPeerRequest("this data centre has no REALTIME_PEER_SECRET: peer dispatch is off")
    if sender not in known:
        raise InvalidPeerRequest(f"unknown data centre {sender[:40]!r}")
    try:
        sent_at = float(timestamp)
    except ValueError:
        raise InvalidPeerRequest(f"{HEADER_TIMESTAMP} is not a number") from None
    # NaN compares false with everything: it would never be stale.
    if not math.isfinite(sent_at) or abs(now - sent_at) > MAX_CLOCK_SKEW_SECS:
        raise InvalidPeerRequest("the request is stale or from the future (replay or clock skew)")
    # Bytes, not str: compare_digest refuses non-ASCII text, and a forged header may hold any byte.
    expected = signature(secret, timestamp, sender, body).encode()
    if not hmac.compare_digest(expected, given.encode("utf-8", "surrogateescape")):
        raise InvalidPeerRequest("bad signature")
    return str(sender)


@dataclass(frozen=True, slots=True)
class PeerEvent:
    """An event as it crosses data centres: enough to rebuild the identical frame (at this data centre's
    position in the topic's history: every data centre keeps its own)."""

    id: str
    topic: str
    type: str
    data: Any
    published_at: float
    template: Template = field(default=Template(b"", b""), compare=False, repr=False)


def to_wire(events: list[Event]) -> bytes:
    return json.dumps(
        {"events": [{**event.to_dict(), "published_at": round(event.published_at, 6)} for event in events]},
        separators=(",", ":"),
    ).encode()


class PeerLink:
    """The bounded queue and sender task towards one peer data centre."""

    def __init__(self, name: str, url: str, *, sender: str, secret: str, capacity: int, client: httpx.AsyncClient):
        self.name = name
        self.url = url + PEER_PATH
        self.sender = sender
        self.secret = secret
        self.queue: deque[Event] = deque()
        self.capacity = capacity
        self.client = client
        self.wakeup = asyncio.Event()
        self.stats = {"forwarded": 0, "dropped_queue_full": 0, "dropped_after_retries": 0, "failed_attempts": 0}
        self.task: asyncio.Task[None] | None = None

    def enqueue(self, event: Event) -> None:
        if len(self.queue) >= self.capacity:
            # Newest events matter most to live viewers: drop the oldest and count it.
            self.queue.popleft()
            self.stats["dropped_queue_full"] += 1
            if self.stats["dropped_queue_full"] % 1000 == 1:
                logger.error(
                    "peer %s queue full: dropped %d events so far", self.name, self.stats["dropped_queue_full"]
                )
        self.queue.append(event)
        self.wakeup.set()

    async def run(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup.clear()
            while self.queue:
                batch = [self.queue.popleft() for _ in range(min(MAX_BATCH, len(self.queue)))]
                await self._send(batch)

    async def _send(self, batch: list[Event]) -> None:
        body = to_wire(batch)
        for attempt, delay in enumerate((0.0, *RETRY_DELAYS_SECS)):
            if delay:
                await asyncio.sleep(delay)
            try:
                response = await self.client.post(
                    self.url, content=body, headers=signed_headers(self.secret, self.sender, body, time.time())
                )
            except httpx.HTTPError as exc:
                self.stats["failed_attempts"] += 1
                logger.warning("forward to %s failed (attempt %d): %s", self.name, attempt + 1, exc)
                continue
            if response.status_code < 300:
                self.stats["forwarded"] += len(batch)
                return
            self.stats["failed_attempts"] += 1
            logger.warning("forward to %s refused (attempt %d): %s", self.name, attempt + 1, response.text[:200])
            if 400 <= response.status_code < 500:
                break  # A refusal will not change on retry (bad secret, bad names).
        self.stats["dropped_after_retries"] += len(batch)
        logger.error("dropped %d events for peer %s after retries", len(batch), self.name)


class Forwarder:
    """This process's links to every peer; started lazily on the running loop."""

    def __init__(self, peers: dict[str, str], *, sender: str, secret: str, capacity: int, timeout_secs: float):
        self.client = httpx.AsyncClient(timeout=timeout_secs)
        self.links = {
            name: PeerLink(name, url, sender=sender, secret=secret, capacity=capacity, client=self.client)
            for name, url in peers.items()
        }
        self.loop: asyncio.AbstractEventLoop | None = None

    def forward(self, event: Event) -> None:
        """Queue `event` for every peer. Never blocks and never raises for a slow or dead peer."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
            for link in self.links.values():
                link.task = self.loop.create_task(link.run(), name=f"realtime-peer-{link.name}")
        for link in self.links.values():
            link.enqueue(event)

    def snapshot(self) -> dict[str, Any]:
        return {name: {**link.stats, "queued": len(link.queue)} for name, link in self.links.items()}


class MemorySeen:
    """Event ids delivered recently, in this process (the embedded default has one process per data centre)."""

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}

    async def afirst_time(self, ids: list[str], now: float) -> list[bool]:
        # Ids arrive roughly in time order, so expired ones sit at the front of the insertion-ordered dict.
        for event_id, deadline in list(self._deadlines.items()):
            if deadline > now:
                break
            del self._deadlines[event_id]
        fresh = []
        for event_id in ids:
            fresh.append(event_id not in self._deadlines)
            self._deadlines.setdefault(event_id, now + SEEN_IDS_TTL_SECS)
        return fresh

    async def aforget(self, ids: list[str]) -> None:
        for event_id in ids:
            self._deadlines.pop(event_id, None)


class RedisSeen:
    """Event ids delivered recently by any worker of this data centre: one SET NX per id, pipelined."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    async def afirst_time(self, ids: list[str], now: float) -> list[bool]:
        # One pipeline per shard, run together: each id's key lives on the shard its key hashes to.
        keys = [stores.key("peer-seen", event_id) for event_id in ids]

        async def mark(server: str, indexes: list[int]) -> list[Any]:
            async with stores.aclient(server).pipeline(transaction=False) as pipe:
                for index in indexes:
                    pipe.set(keys[index], b"1", nx=True, ex=int(SEEN_IDS_TTL_SECS))
                return list(await pipe.execute())

        groups = list(stores.by_server(keys, self.url).items())
        results = await asyncio.gather(*(mark(server, indexes) for server, indexes in groups))
        first = [False] * len(ids)
        for (_, indexes), replies in zip(groups, results, strict=True):
            for index, reply in zip(indexes, replies, strict=True):
                first[index] = bool(reply)
        return first

    async def aforget(self, ids: list[str]) -> None:
        keys = [stores.key("peer-seen", event_id) for event_id in ids]
        grouped = stores.by_server(keys, self.url).items()
        await asyncio.gather(
            *(stores.aclient(server).delete(*(keys[i] for i in indexes)) for server, indexes in grouped)
        )


_PEER_ID_RE = re.compile(r"[0-9]+-[A-Za-z0-9_.-]{1,100}")


def parse_wire(body: bytes, *, max_event_bytes: int) -> list[PeerEvent]:
    """Decode and validate a peer batch exactly as a local publish is validated, frames encoded once.

    Raises ValueError saying what is wrong: nothing of a bad batch is delivered or remembered.
    """
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ValueError("the body is not strict UTF-8 JSON") from None
    items = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
        raise ValueError(f"'events' must be a list of 1 to {MAX_BATCH} events")
    events = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not _PEER_ID_RE.fullmatch(item["id"]):
            raise ValueError("each event needs the 'id' its data centre gave it (<microseconds>-<node>)")
        published_at = item.get("published_at")
        if isinstance(published_at, bool) or not isinstance(published_at, int | float):
            raise ValueError("each event needs a numeric 'published_at'")
        try:
            topic, event_type = check_topic(item.get("topic")), check_type(item.get("type"))
            template = encode_template(item["id"], topic, event_type, item.get("data"), published_at)
        except (InvalidTopic, InvalidEvent) as exc:
            raise ValueError(f"event {item['id']}: {exc}") from None
        if len(template) > max_event_bytes:
            raise ValueError(f"event {item['id']} is larger than REALTIME_MAX_EVENT_BYTES ({max_event_bytes:,})")
        events.append(PeerEvent(item["id"], topic, event_type, item.get("data"), published_at, template))
    return events


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")
