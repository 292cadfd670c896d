"""The admin's live routing view (staff): the cluster's workers, the busiest topics, and who hosts a topic.

Cluster-wide, whichever worker answers: the workers and busiest topics come from every worker's latest
snapshot (realtime.metrics), a topic's hosts from the dispatcher's own map (the channel-layer group, as a
publish would read it), and each host's streams on that topic from the host itself (a cross-worker call).
"""

from typing import Any

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from redis.exceptions import RedisError

from realtime import metrics
from realtime.rpc import Refused
from realtime.topics import InvalidTopic, check_topic
from realtime.worker import aget_worker


async def acluster(topic: str) -> dict[str, Any]:
    """What the page shows: workers, totals, busiest topics and, for `topic` if given, its hosts."""
    worker = await aget_worker()
    mine = worker.snapshot()
    try:
        others = [found for found in await metrics.directory.aread() if found.get("worker") != mine["worker"]]
        problem = ""
    except RedisError as exc:
        others, problem = [], f"the other workers' figures are unreadable: {exc}"
    snapshots = [mine, *others]
    view: dict[str, Any] = {
        "workers": snapshots,
        "totals": metrics.totals(snapshots),
        "busiest": metrics.busiest(snapshots),
        "problem": problem,
        "topic": topic,
    }
    if topic:
        hosts = []
        for channel in await worker.dispatcher.ahosts(topic):
            try:
                streams: int | str = (await worker.acount(channel, [topic]))[topic]
            except Refused as exc:
                streams = f"no answer ({exc.message})"
            hosts.append({"worker": channel, "streams": streams})
        view["hosts"] = hosts
    return view


@admin.site.admin_view
def routing(request: HttpRequest) -> HttpResponse:
    """GET /admin/realtime/routing/[?topic=...]"""
    topic = request.GET.get("topic", "").strip()
    error = ""
    if topic:
        try:
            check_topic(topic)
        except InvalidTopic as exc:
            topic, error = "", str(exc)
    context = {
        **admin.site.each_context(request),
        "title": "Real-time routing",
        **async_to_sync(acluster)(topic),
        "error": error,
    }
    return TemplateResponse(request, "admin/realtime/routing.html", context)
