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
from realtime.history import Position
from realtime.hub import Connection
from realtime.rpc import FORBIDDEN_TOPIC, UNAVAILABLE, UNKNOWN_CONNECTION, Refused
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
    assert refused.value.code == UNAVAILABLE, "not final: the client tries again shortly (503)"
    assert rule.calls == READ_CHECK_TRIES
    assert not conn.topics


async def test_a_revocation_while_a_stream_opens_has_its_topics_checked_again(worker: Worker, monkeypatch: Any) -> None:
    """/realtime/connect checks its topics before the response starts; the subscribe comes after awaits (caps,
    the headers). A revocation in between is seen by aattach, which checks again."""
    mark = worker.revocation_mark()
    worker._revoke(revocation.control_message(member_id=MEMBER, topics=["conversation.1"], reason="removed"))
    rule = Rule(worker, answers=[False], revocations=[])
    monkeypatch.setattr(policies, "acheck_read", rule)
    conn = Connection(worker.new_connection_id(), MEMBER, QueuedWriter(Recorder(), max_pending=100))
    with pytest.raises(ForbiddenTopic):
        await worker.aattach(conn, ["conversation.1", "conversation.2"], checked_at=mark)
    assert rule.calls == 1
    assert conn.id not in worker.hub.connections
    assert "conversation.1" not in worker.hub.topics
    # Nothing revoked since the mark: no second check.
    rule = Rule(worker, answers=[], revocations=[])
    monkeypatch.setattr(policies, "acheck_read", rule)
    await worker.aattach(conn, ["conversation.2"], checked_at=worker.revocation_mark())
    assert rule.calls == 0
    assert conn.topics == {"conversation.2"}


async def test_a_stream_that_ends_during_the_check_is_not_subscribed(worker: Worker, monkeypatch: Any) -> None:
    conn = await _stream(worker)

    async def rule(topics: Any, member_id: int | None, open_names: Any = ()) -> None:
        await asyncio.sleep(0)
        worker.detach(conn)  # the client leaves during the rule's query

    monkeypatch.setattr(policies, "acheck_read", rule)
    with pytest.raises(Refused) as refused:
        await worker.achange(conn.id, "subscribe", ["conversation.9"], MEMBER, {})
    assert refused.value.code == UNKNOWN_CONNECTION
    assert "conversation.9" not in worker.hub.topics
    assert await worker.dispatcher.ahosts("conversation.9") == []


async def test_a_revocation_during_a_resume_takes_the_topic_cleanly(worker: Worker, monkeypatch: Any) -> None:
    conn = await _stream(worker)
    monkeypatch.setattr(policies, "acheck_read", Rule(worker, answers=[True], revocations=[]))
    read = worker.dispatcher.aread_history

    async def read_then_revoke(since: Any) -> Any:
        replays = await read(since)
        worker._revoke(revocation.control_message(member_id=MEMBER, topics=["conversation.1"], reason="removed"))
        return replays

    monkeypatch.setattr(worker.dispatcher, "aread_history", read_then_revoke)
    reply = await worker.achange(conn.id, "subscribe", ["conversation.1"], MEMBER, {"conversation.1": Position("", 0)})
    assert reply["recovered"] == []
    assert reply["gaps"] == []
    assert conn.topics == set()
    assert conn.catching_up is None, "the stream back on the fast write path"
