"""The admin's live routing view: staff only; workers, busiest topics, and who hosts a topic."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from realtime.hub import Connection
from realtime.worker import aget_worker

pytestmark = pytest.mark.django_db(transaction=True)


class _Writer:
    kind = "test"

    def write(self, payload: object) -> bool:
        return True

    def end(self, final: bytes = b"", *, abort_after_secs: float | None = None) -> None:
        return None

    async def aended(self) -> None:
        return None


def test_the_routing_view_is_for_staff() -> None:
    client = Client()  # Django's test client (`client` here is the ASGI one of tests/realtime/conftest.py)
    response = client.get("/admin/realtime/routing/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
    client.force_login(User.objects.create_user("member"))
    assert client.get("/admin/realtime/routing/").status_code == 302


async def test_it_shows_the_workers_the_busiest_topics_and_a_topics_hosts(async_client, settings) -> None:
    settings.REALTIME = {**settings.REALTIME, "OPEN_NAMESPACES": ["news"]}
    worker = await aget_worker()
    streams = [Connection(worker.new_connection_id(), None, _Writer()) for _ in range(3)]
    for stream in streams:
        await worker.aattach(stream, ["news.busy"])
    try:
        staff = await User.objects.acreate_superuser("root")
        await async_client.aforce_login(staff)
        page = (await async_client.get("/admin/realtime/routing/", {"topic": "news.busy"})).content.decode()
        assert "Real-time routing" in page
        assert worker.channel in page
        assert '<a href="?topic=news.busy">news.busy</a></td><td>3</td>' in page
        # The topic's hosts, from the dispatcher's map, with each host's own count.
        assert f"<tr><td><code>{worker.channel}</code></td><td>3</td></tr>" in page
        missing = (await async_client.get("/admin/realtime/routing/", {"topic": "news.nobody"})).content.decode()
        assert "No worker hosts news.nobody" in missing
        bad = (await async_client.get("/admin/realtime/routing/", {"topic": "Not A Topic"})).content.decode()
        assert "is not dotted lower-case words" in bad
    finally:
        for stream in streams:
            worker.detach(stream)
