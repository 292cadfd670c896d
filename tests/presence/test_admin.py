"""Admin: who is online now, with last-seen times, read-only."""

import pytest
from django.contrib.auth.models import User
from django.test import Client

from presence import table
from presence.status import ONLINE, MemberStatus

pytestmark = pytest.mark.django_db


def test_the_admin_lists_who_is_online_with_last_seen_times(client: Client) -> None:
    admin = User.objects.create_superuser("root", password="pw")
    alice, bob = User.objects.create_user("alice"), User.objects.create_user("bob")
    table.record([MemberStatus(alice.pk, ONLINE, 1_700_000_000.0, 1_700_000_000.0)])
    table.record([MemberStatus(bob.pk, "offline", 1_600_000_000.0, 1_600_000_100.0)])
    client.force_login(admin)
    response = client.get("/admin/presence/presence/?online__exact=1")
    assert response.status_code == 200
    page = response.content.decode()
    assert "alice" in page
    assert "bob" not in page
    assert "Nov. 14, 2023" in page  # alice's last-seen time, as a date
    assert client.get("/admin/presence/presence/add/").status_code == 403
