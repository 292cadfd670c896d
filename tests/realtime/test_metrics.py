"""Every worker's figures: latency histograms, cluster totals, the busiest topics, the Prometheus text."""

from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.authtoken.models import Token

from realtime import metrics
from realtime.metrics import Histogram


def snapshot(worker: str, **figures: Any) -> dict[str, Any]:
    return {"worker": worker, "time": 1.0, "started_at": 0.5, **figures}


def test_a_histogram_counts_each_value_in_its_bucket() -> None:
    histogram = Histogram((0.01, 0.1))
    for value in (0.005, 0.01, 0.05, 3.0):
        histogram.observe(value)
    assert histogram.as_dict() == {"buckets": [0.01, 0.1], "counts": [2, 1, 1], "sum": 3.065}


def test_one_scrape_has_every_worker_under_its_own_label() -> None:
    latency = Histogram((0.01, 0.1))
    latency.observe(0.05)
    text = metrics.prometheus_text(
        [
            snapshot("w1", connections=3, dispatch_published=10, histograms={"publish_seconds": latency.as_dict()}),
            snapshot("w2", connections=4, dispatch_published=0, sweeps=2, registry_out_of_step=False),
        ]
    ).decode()
    samples = {
        (sample.name, sample.labels.get("worker"), sample.labels.get("le")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[("livesite_connections", "w1", None)] == 3
    assert samples[("livesite_connections", "w2", None)] == 4
    assert samples[("livesite_dispatch_published_total", "w1", None)] == 10
    assert samples[("livesite_publish_seconds_bucket", "w1", "0.1")] == 1
    assert samples[("livesite_publish_seconds_bucket", "w1", "+Inf")] == 1
    # A figure nobody named is still exported (as a gauge), a flag is not a number.
    assert samples[("livesite_worker_sweeps", "w2", None)] == 2
    assert not any(name == "livesite_worker_registry_out_of_step" for name, _, _ in samples)


def test_totals_and_the_busiest_topics_span_the_cluster() -> None:
    snapshots = [
        snapshot("w1", connections=3, busiest_topics=[["a", 5], ["b", 1]]),
        snapshot("w2", connections=4, busiest_topics=[["b", 7]]),
    ]
    assert metrics.totals(snapshots)["connections"] == 7
    assert metrics.busiest(snapshots) == [
        {"topic": "b", "streams": 8, "workers": ["w1", "w2"]},
        {"topic": "a", "streams": 5, "workers": ["w1"]},
    ]


@pytest.mark.django_db(transaction=True)
async def test_metrics_answer_the_scraper_network_and_staff_only(client: httpx.AsyncClient, settings: Any) -> None:
    response = await client.get("/metrics")  # httpx's ASGI transport calls from 127.0.0.1
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "livesite_connections" in response.text
    settings.REALTIME = {**settings.REALTIME, "METRICS_ALLOW": ["10.0.0.0/8"]}
    refused = await client.get("/metrics")
    assert refused.status_code == 403
    assert refused.json()["code"] == "staff_only"
    key = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_superuser("root")).key)()
    assert (await client.get("/metrics", headers={"Authorization": f"Token {key}"})).status_code == 200


@pytest.mark.django_db(transaction=True)
async def test_cluster_stats_list_every_worker_with_totals(client: httpx.AsyncClient) -> None:
    key = await sync_to_async(lambda: Token.objects.create(user=User.objects.create_superuser("root")).key)()
    headers = {"Authorization": f"Token {key}"}
    body = (await client.get("/realtime/stats?scope=cluster", headers=headers)).json()
    assert body["scope"] == "cluster"
    assert len(body["workers"]) == 1  # the embedded default: one process
    assert body["totals"]["connections"] == body["workers"][0]["connections"]
    assert (await client.get("/realtime/stats?scope=galaxy", headers=headers)).status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_a_request_through_a_proxy_is_never_taken_for_the_scraper(client: httpx.AsyncClient) -> None:
    # A proxy that forgot X-Forwarded-For makes every visitor look like 127.0.0.1.
    for header in ("X-Forwarded-Host", "X-Forwarded-For", "X-Real-IP", "Forwarded"):
        response = await client.get("/metrics", headers={header: "live.example.org"})
        assert response.status_code == 403, header
