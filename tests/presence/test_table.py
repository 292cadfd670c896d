"""The Presence table: newer statuses win, whatever order racing workers write them in."""

import pytest
from django.contrib.auth.models import User

from presence import table
from presence.models import Presence
from presence.status import OFFLINE, ONLINE, MemberStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice() -> int:
    return User.objects.create_user("alice").pk


def _row(member: int) -> tuple:
    row = Presence.objects.get(member_id=member)
    return (row.online, row.last_seen, row.changed_at)


def test_a_newer_transition_replaces_an_older_one_and_never_the_reverse(alice: int) -> None:
    table.record([MemberStatus(alice, ONLINE, 100.0, 100.0)])
    table.record([MemberStatus(alice, OFFLINE, 100.0, 111.0)])
    assert _row(alice) == (False, 100.0, 111.0)
    table.record([MemberStatus(alice, ONLINE, 100.0, 100.0)])  # the online write arriving late
    assert _row(alice) == (False, 100.0, 111.0)


def test_the_same_transition_seen_later_refreshes_last_seen_only_forward(alice: int) -> None:
    table.record([MemberStatus(alice, ONLINE, 100.0, 100.0)])
    table.record([MemberStatus(alice, ONLINE, 130.0, 100.0)])
    table.record([MemberStatus(alice, ONLINE, 120.0, 100.0)])
    assert _row(alice) == (True, 130.0, 100.0)


def test_one_call_keeps_each_members_newest_and_skips_unknown_and_unseen(alice: int) -> None:
    offered = table.record(
        [
            MemberStatus(alice, OFFLINE, 100.0, 111.0),
            MemberStatus(alice, ONLINE, 100.0, 100.0),
            MemberStatus(alice + 1000, ONLINE, 100.0, 100.0),  # no such user (deleted since)
            MemberStatus(alice, OFFLINE, None, None),  # never seen: nothing to copy
        ]
    )
    assert offered == 1
    assert _row(alice) == (False, 100.0, 111.0)
    assert not Presence.objects.filter(member_id=alice + 1000).exists()
    assert table.record([]) == 0


def test_many_members_in_one_call(alice: int) -> None:
    users = [User(username=f"u{n}") for n in range(1200)]
    User.objects.bulk_create(users)
    ids = list(User.objects.filter(username__startswith="u").values_list("pk", flat=True))
    assert table.record([MemberStatus(member, ONLINE, 5.0, 5.0) for member in ids]) == 1200
    assert sorted(table.online_member_ids()) == sorted(ids)
    assert set(table.lookup(ids[:3])) == set(ids[:3])
