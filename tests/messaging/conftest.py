"""Fixtures for the messaging tests: a publish and revocation recorder, a fake clock and scheduler, members."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from likes import coalesce
from messaging import indicators, ratelimits, receipts, services, sweeper
from tests.clocks import FakeClock, ManualScheduler
from tests.likes.conftest import Published, Recorder
from tests.messaging.factories import make_conversation, make_member

RECEIPT_WINDOW_SECS = 0.3


class MessagingRecorder(Recorder):
    """Records what messaging publishes (validated as realtime would) and the topic revocations it asks for."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.revoked: list[tuple[int, list[str], str]] = []

    def revoke_topics(self, member_id: int, topic_names: list[str], *, reason: str) -> None:
        # As realtime.revocation.revoke_topics: sent after the transaction commits.
        order = (member_id, list(topic_names), reason)
        transaction.on_commit(lambda: self.revoked.append(order))

    async def apublish(self, topic: str, event_type: str, data: Any) -> Any:
        return self.publish(topic, event_type, data)

    def on(self, topic: str) -> list[Published]:
        return [event for event in self if event.topic == topic]

    def summary(self) -> list[tuple[str, str]]:
        return [(event.topic, event.type) for event in self]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> MessagingRecorder:
    recorder = MessagingRecorder(clock)
    monkeypatch.setattr(services, "publish", recorder.publish)
    monkeypatch.setattr(services, "publish_many", recorder.publish_many)
    monkeypatch.setattr(services, "revoke_topics", recorder.revoke_topics)
    monkeypatch.setattr(sweeper, "apublish", recorder.apublish)
    return recorder


@pytest.fixture(autouse=True)
def _fresh_messaging_state(settings: Any, clock: FakeClock, scheduler: ManualScheduler) -> Iterator[receipts.Coalescer]:
    """Every test: no messaging rate limits (tests/messaging/test_api.py sets the ones it checks), an empty
    in-memory typing store, and a receipts coalescer on the fake clock."""
    settings.MESSAGING = {**settings.MESSAGING, "RATE_LIMITS": "message=0,typing=0,conversation=0"}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # admin_client's, quickly
    ratelimits.reset()
    indicators.reset_store()
    instance = services.new_receipts(
        store=coalesce.MemoryStore(clock), schedule=scheduler, window_secs=RECEIPT_WINDOW_SECS
    )
    services.set_receipts(instance)
    yield instance
    services.set_receipts(None)
    indicators.reset_store()


@pytest.fixture
def alice(db: None) -> Any:
    return make_member("alice", "Alice")


@pytest.fixture
def bob(db: None) -> Any:
    return make_member("bob", "Bob")


@pytest.fixture
def carol(db: None) -> Any:
    return make_member("carol", "Carol")


@pytest.fixture
def dave(db: None) -> Any:
    return make_member("dave", "Dave")


@pytest.fixture
def group(alice: Any, bob: Any, carol: Any) -> Any:
    return make_conversation(alice, bob, carol, title="Weekend plans")


@pytest.fixture
def direct(alice: Any, bob: Any) -> Any:
    return make_conversation(alice, bob, direct=True)
