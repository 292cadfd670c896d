"""A topic revocation that arrives while a subscription's read check is under way is never outrun by it.

The read check awaits (an application rule's database query). If the member is removed meanwhile, the check
may answer from the state before the removal, and the revocation reaches the worker before the topic is
subscribed: it finds nothing to take. The worker notices and checks again.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from realtime import policies, revocation
from realtime.dispatcher import Dispatcher
from realtime.hub import Connection
from realtime.rpc import FORBIDDEN_TOPIC, Refused
from realtime.servers.queued import QueuedWriter
from realtime.topics import ForbiddenTopic
from realtime.worker import READ_CHECK_TRIES, Worker
from tests.realtime.test_hub import Recorder

MEMBER = 7


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    worker = Worker(Dispatcher(InMemoryChannelLayer(group_expiry=60)), flush_secs=0.0)
    await worker.astart()
    yield worker
    await worker.astop()


async def _stream(worker: Worker) -> Connection:
    conn = Connection(worker.new_connection_id(), MEMBER, QueuedWriter(Recorder(), max_pending=100))
    await worker.aattach(conn)
    return conn


class Rule:
    """A read rule whose answers the test gives, and during whose wait revocations arrive."""

    def __init__(self, worker: Worker, answers: list[bool], revocations: list[tuple[int, list[str]]]) -> None:
        self.worker = worker
        self.answers = answers
        self.revocations = revocations
        self.calls = 0

    async def __call__(self, topics: Any, member_id: int | None, open_names: Any = ()) -> None:
        self.calls += 1
        await asyncio.sleep(0)  # the rule's query: the revocation's message is handled meanwhile
        if self.revocations:
            member, taken = self.revocations.pop(0)
            self.worker._revoke(revocation.control_message(member_id=member, topics=taken, reason="removed"))
        if not self.answers.pop(0):
            raise ForbiddenTopic("this stream may not read it (test rule)")


async def test_a_revocation_during_the_check_makes_it_check_again(worker: Worker, monkeypatch: Any) -> None:
    conn = await _stream(worker)
    # Allowed by the state before the removal, refused once checked again.
    rule = Rule(worker, answers=[True, False], revocations=[(MEMBER, ["conversation.1"])])
    monkeypatch.setattr(policies, "acheck_read", rule)
    with pytest.raises(Refused) as refused:
        await worker.achange(conn.id, "subscribe", ["conversation.1"], MEMBER, {})
    assert refused.value.code == FORBIDDEN_TOPIC
    assert rule.calls == 2
    assert "conversation.1" not in conn.topics
    assert worker.stats["read_checks_repeated"] == 1


async def test_other_members_or_topics_revoked_meanwhile_change_nothing(worker: Worker, monkeypatch: Any) -> None:
    conn = await _stream(worker)
    rule = Rule(worker, answers=[True], revocations=[(MEMBER + 1, ["conversation.1"])])
    monkeypatch.setattr(policies, "acheck_read", rule)
    await worker.achange(conn.id, "subscribe", ["conversation.1"], MEMBER, {})
    rule = Rule(worker, answers=[True], revocations=[(MEMBER, ["conversation.2"])])
    monkeypatch.setattr(policies, "acheck_read", rule)
    await worker.achange(conn.id, "subscribe", ["conversation.3"], MEMBER, {})
    assert conn.topics == {"conversation.1", "conversation.3"}
    assert worker.stats["read_checks_repeated"] == 0


async def test_a_check_overtaken_every_time_is_refused(worker: Worker, monkeypatch: Any) -> None:
    conn = await _stream(worker)
    rule = Rule(
        worker,
        answers=[True] * READ_CHECK_TRIES,
        revocations=[(MEMBER, ["conversation.1"])] * READ_CHECK_TRIES,
    )
    monkeypatch.setattr(policies, "acheck_read", rule)
    with pytest.raises(Refused) as refused:
        await worker.achange(conn.id, "subscribe", ["conversation.1"], MEMBER, {})
    assert refused.value.code == FORBIDDEN_TOPIC
    assert rule.calls == READ_CHECK_TRIES
    assert not conn.topics
