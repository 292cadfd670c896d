"""Every worker's figures in one place: latency histograms, the cluster's directory of snapshots, Prometheus text.

Each worker writes its snapshot (realtime.worker.Worker.snapshot: counters, gauges, histograms, its busiest
topics) to the store every SNAPSHOT_SECS, under a key that expires after three intervals; any worker can then
answer for the whole cluster: `/metrics` (one Prometheus scrape gives every worker, labelled by worker),
`/realtime/stats?scope=cluster` and the admin's routing view. A worker that dies drops out within three
intervals. On the embedded default the directory is this process's own snapshot.
"""

import bisect
import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from realtime import stores

SNAPSHOT_SECS = 5.0
_INDEX_KEY = ("workers",)

# Seconds: a publish handed to the workers (the dispatch round), a cross-worker call answered.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Fixed buckets, cumulative on export as Prometheus wants; cheap to observe (one bisect)."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one: above every bucket (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value

    def as_dict(self) -> dict[str, Any]:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum}


# Named figures of a snapshot, with their Prometheus type and help; any other number is exported as a gauge
# named after its key, so nothing a worker counts is hidden from a scrape.
COUNTERS = {
    "dispatch_published": "events this worker published (dispatched to the hosting workers and stored)",
    "received_events": "events this worker received for its streams",
    "delivered": "event writes to streams (one per stream per fan-out)",
    "dispatch_worker_messages": "channel-layer messages sent to workers (one per hosting worker per round)",
    "overflow_closed": "streams reset for falling behind (slow consumers)",
    "dispatch_failed_rounds": "dispatch rounds that failed (their publishers got an error)",
    "dispatch_failed_worker_sends": "round messages that could not be sent to a worker (filled from history)",
    "dispatch_dropped_worker_full": "round messages dropped because a worker's channel was full",
    "rpc_sent": "cross-worker calls made",
    "rpc_timeouts": "cross-worker calls that timed out",
    "registry_failures": "topic registrations refused by Redis",
    "gaps": "topics whose streams were told of lost events (gap frames)",
    "filled_events": "events read back from the history to fill a hole",
    "resumed_topics": "topics resumed exactly for reconnecting streams",
    "resume_gaps": "topics a reconnecting stream could not resume",
    "revoked_streams": "streams closed because their credentials were revoked",
    "presence_went_online": "members that went online (presence transitions)",
    "presence_went_offline": "members that went offline (presence transitions)",
    "likes_batches": "like batches written to the database",
    "likes_items": "likes written to the database",
}
GAUGES = {
    "connections": "streams open on this worker",
    "subscriptions": "stream-topic subscriptions on this worker",
    "topics": "topics with at least one stream on this worker",
    "members": "signed-in members with a stream on this worker",
    "outbox_waiting": "events waiting for the next fan-out",
}
HISTOGRAMS = {
    "publish_seconds": "time from a publish call to its events being stored and handed to the workers",
    "rpc_seconds": "time from a cross-worker call to its answer",
}


def _client_key(*parts: object) -> str:
    return stores.key(*_INDEX_KEY, *parts)


class Directory:
    """The cluster's latest snapshots: in Redis with REDIS_URL, else only this process's."""

    def __init__(self) -> None:
        self.local: dict[str, Any] | None = None

    async def apublish(self, snapshot: dict[str, Any]) -> None:
        self.local = snapshot
        if not stores.url():
            return
        now = time.time()
        ttl = int(3 * SNAPSHOT_SECS)
        worker = str(snapshot["worker"])
        async with stores.aclient().pipeline(transaction=False) as pipe:
            pipe.set(_client_key(worker), json.dumps(snapshot, separators=(",", ":")), ex=ttl)
            pipe.zadd(_client_key(), {worker: now})
            pipe.zremrangebyscore(_client_key(), 0, now - ttl)
            await pipe.execute()

    async def aread(self) -> list[dict[str, Any]]:
        """Every live worker's latest snapshot (this one's included), oldest worker first."""
        if not stores.url():
            return [self.local] if self.local else []
        client = stores.aclient()
        names: list[Any] = await client.zrangebyscore(_client_key(), time.time() - 3 * SNAPSHOT_SECS, "+inf")
        workers = [bytes(name).decode() for name in names]
        if not workers:
            return []
        found = await client.mget([_client_key(worker) for worker in workers])
        return [json.loads(raw) for raw in found if raw is not None]


directory = Directory()


def totals(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The sum over workers of every number they report (counters and gauges alike)."""
    summed: dict[str, float] = {}
    for snapshot in snapshots:
        for name, value in snapshot.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and name != "time":
                summed[name] = summed.get(name, 0) + value
    return summed


def busiest(snapshots: Iterable[Mapping[str, Any]], limit: int = 20) -> list[dict[str, Any]]:
    """The topics with the most streams across the cluster (from each worker's own busiest), most first."""
    streams: dict[str, int] = {}
    hosts: dict[str, list[str]] = {}
    for snapshot in snapshots:
        for topic, count in snapshot.get("busiest_topics", []):
            streams[topic] = streams.get(topic, 0) + int(count)
            hosts.setdefault(topic, []).append(str(snapshot["worker"]))
    ranked = sorted(streams.items(), key=lambda item: (-item[1], item[0]))[:limit]
    return [{"topic": topic, "streams": count, "workers": hosts[topic]} for topic, count in ranked]


class _Collector:
    def __init__(self, snapshots: list[dict[str, Any]]) -> None:
        self.snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        snapshots = self.snapshots
        for name, help_text in COUNTERS.items():
            yield self._filled(CounterMetricFamily(f"livesite_{name}", help_text, labels=["worker"]), name)
        for name, help_text in GAUGES.items():
            yield self._filled(GaugeMetricFamily(f"livesite_{name}", help_text, labels=["worker"]), name)
        for name, help_text in HISTOGRAMS.items():
            histogram = HistogramMetricFamily(f"livesite_{name}", help_text, labels=["worker"])
            for snapshot in snapshots:
                data = snapshot.get("histograms", {}).get(name)
                if data:
                    histogram.add_metric([snapshot["worker"]], _cumulative(data), data["sum"])
            yield histogram
        # Every other number a worker reports, so nothing it counts is hidden from a scrape.
        known = {"time", "started_at", *COUNTERS, *GAUGES}
        others = sorted({key for snapshot in snapshots for key, value in snapshot.items() if _number(value)} - known)
        for name in others:
            help_text = f"worker figure {name} (/realtime/stats)"
            yield self._filled(GaugeMetricFamily(f"livesite_worker_{name}", help_text, labels=["worker"]), name)
        yield self._filled(
            GaugeMetricFamily(
                "livesite_worker_started_seconds", "when each worker started (Unix time)", labels=["worker"]
            ),
            "started_at",
        )

    def _filled(self, family: CounterMetricFamily | GaugeMetricFamily, key: str) -> Metric:
        """`family` with one sample per worker that reports `key` as a number."""
        for snapshot in self.snapshots:
            value = snapshot.get(key)
            if isinstance(value, int | float) and _number(value):
                family.add_metric([snapshot["worker"]], float(value))
        return family


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cumulative(data: Mapping[str, Any]) -> list[tuple[str, float]]:
    running, out = 0, []
    for bound, count in zip([*data["buckets"], float("inf")], data["counts"], strict=True):
        running += count
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), float(running)))
    return out


def prometheus_text(snapshots: list[dict[str, Any]]) -> bytes:
    """The Prometheus text exposition of every worker's snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(snapshots))
    return generate_latest(registry)
