"""Presence services: the exact events they publish, the Presence table they keep, and the sweeper loop."""

import asyncio
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from presence import services, table
from presence.models import Presence
from presence.status import OFFLINE, ONLINE, MemberStatus
from realtime.dispatcher import DispatchUnavailable

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice() -> int:
    return User.objects.create_user("alice").pk


@pytest.fixture
def bob() -> int:
    return User.objects.create_user("bob").pk


def _row(member: int) -> Presence | None:
    return Presence.objects.filter(member_id=member).first()


arow = sync_to_async(_row)


async def test_first_heartbeat_publishes_online_on_the_member_topic(published: Any, alice: int) -> None:
    before = time.time()
    await services.arecord_heartbeats([alice])
    await services.arecord_heartbeats([alice])
    assert len(published) == 1
    topic, event_type, data = published[0]
    assert (topic, event_type) == (f"presence.member.{alice}", "presence.changed")
    assert data == {
        "member": alice,
        "status": "online",
        "last_seen": data["last_seen"],
        "changed_at": data["last_seen"],
    }
    assert before <= data["last_seen"] <= time.time()
    await services.aflush_table_writes()
    row = await arow(alice)
    assert (row.online, row.last_seen, row.changed_at) == (True, data["last_seen"], data["changed_at"])


async def test_a_burst_of_streams_opening_costs_a_couple_of_store_calls(published: Any, alice: int, bob: int) -> None:
    calls = services.stats["heartbeat_calls"]
    await asyncio.gather(*(services.arecord_heartbeats([member]) for member in [alice, bob] * 50))
    assert services.stats["heartbeat_calls"] - calls == 1
    assert sorted(data["member"] for _, _, data in published) == sorted([alice, bob])


async def test_no_member_no_work(published: Any) -> None:
    await services.arecord_heartbeats([])
    assert published == []
    assert await services.asweep() == []


async def test_a_sweep_publishes_offline_once_with_the_last_heartbeat_as_last_seen(published: Any, alice: int) -> None:
    store = services.get_store()
    await store.abeat([alice], 1000.0)
    gone = await services.asweep(now=1010.5)
    assert gone == [MemberStatus(alice, OFFLINE, 1000.0, 1010.5)]
    assert published == [
        (
            f"presence.member.{alice}",
            "presence.changed",
            {"member": alice, "status": "offline", "last_seen": 1000.0, "changed_at": 1010.5},
        )
    ]
    assert await services.asweep(now=1020.0) == []
    assert len(published) == 1
    await services.aflush_table_writes()
    row = await arow(alice)
    assert (row.online, row.last_seen, row.changed_at) == (False, 1000.0, 1010.5)


async def test_a_lost_publish_is_counted_and_the_table_is_still_written(published: Any, alice: int) -> None:
    published.fail_with = DispatchUnavailable("redis is down")
    failed = services.stats["publish_failed"]
    await services.arecord_heartbeats([alice])
    assert services.stats["publish_failed"] == failed + 1
    await services.aflush_table_writes()
    assert (await arow(alice)).online


async def test_hundreds_of_transitions_at_once_are_each_published_once(published: Any) -> None:
    members = list(range(1, 251))  # more than PUBLISH_CONCURRENCY: several rounds
    await services.get_store().abeat(members, 1000.0)
    assert len(await services.asweep(now=1011.0)) == 250
    assert sorted(data["member"] for _, _, data in published) == members
    assert {data["status"] for _, _, data in published} == {"offline"}


async def test_an_unexpected_publish_error_is_logged_and_counted(
    published: Any, alice: int, caplog: pytest.LogCaptureFixture
) -> None:
    published.fail_with = ValueError("a bug")
    failed = services.stats["publish_failed"]
    await services.arecord_heartbeats([alice])
    assert services.stats["publish_failed"] == failed + 1
    assert "1 presence.changed events lost" in caplog.text
    assert "ValueError: a bug" in caplog.text
    await services.aflush_table_writes()


async def test_statuses_come_from_the_store_in_the_order_asked(published: Any, alice: int, bob: int) -> None:
    await services.get_store().abeat([alice], 1000.0)
    expected = [MemberStatus(bob, OFFLINE, None, None), MemberStatus(alice, ONLINE, 1000.0, 1000.0)]
    assert await services.astatuses([bob, alice]) == expected
    assert await sync_to_async(services.statuses)([bob, alice]) == expected


async def test_a_member_the_store_lost_is_offline_with_the_tables_last_seen(published: Any, alice: int) -> None:
    # The embedded default restarted: the table remembers alice online, the new store has never seen her.
    await sync_to_async(table.record)([MemberStatus(alice, ONLINE, 900.0, 800.0)])
    assert await services.astatuses([alice]) == [MemberStatus(alice, OFFLINE, 900.0, 800.0)]


async def test_reconciliation_repairs_the_table_from_the_store(published: Any, alice: int, bob: int) -> None:
    # bob: the table says online, the store lost him. alice: online since 1000, last heartbeat 1005.
    await sync_to_async(table.record)([MemberStatus(bob, ONLINE, 900.0, 800.0)])
    store = services.get_store()
    await store.abeat([alice], 1000.0)
    await store.abeat([alice], 1005.0)
    assert await services.areconcile(now=1006.0, claim=False) == 2
    bob_row, alice_row = await arow(bob), await arow(alice)
    assert (bob_row.online, bob_row.last_seen, bob_row.changed_at) == (False, 900.0, 1006.0)
    assert (alice_row.online, alice_row.last_seen, alice_row.changed_at) == (True, 1005.0, 1000.0)
    assert published == [], "reconciliation announces nothing"


async def test_reconciliation_runs_once_per_period_when_claimed(published: Any) -> None:
    assert await services.areconcile() == 0  # ran: nothing to copy
    runs = services.stats["reconciliations"]
    assert await services.areconcile() == 0
    assert services.stats["reconciliations"] == runs, "the second call lost the claim"


async def test_the_sweeper_loop_takes_silent_members_offline(published: Any, alice: int) -> None:
    await services.get_store().abeat([alice], time.time() - 60)
    sweeper = asyncio.create_task(services.asweep_forever())
    try:
        async with asyncio.timeout(5):
            while not published:
                await asyncio.sleep(0.01)
    finally:
        sweeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweeper
    assert [data["status"] for _, _, data in published] == ["offline"]
