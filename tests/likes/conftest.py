"""Fixtures for the likes tests: a publish recorder, a fake clock and scheduler, members and videos."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from likes import coalesce, services
from likes.group_commit import GroupCommit
from realtime.publishing import build_event
from tests.clocks import FakeClock, ManualScheduler
from tests.likes.factories import make_member, make_video

WINDOW_SECS = 0.25


@dataclass
class Published:
    topic: str
    type: str
    data: Any
    at: float


class Recorder(list):
    """Stands in for realtime.publish in likes.services: records each event, validated and encoded as it would be."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        # What goes to the home page's topic (services.ALL_VIDEOS_TOPIC), kept apart: the tests of a video's own
        # events read the list itself.
        self.all_videos: list[Published] = []

    def publish(self, topic: str, event_type: str, data: Any) -> Any:
        event = build_event(topic, event_type, data)  # raises on a bad topic, type or payload
        found = Published(topic, event_type, data, self.clock.now)
        (self.all_videos if topic == services.ALL_VIDEOS_TOPIC else self).append(found)
        return event

    def publish_many(self, items: Any) -> list[Any]:
        return [self.publish(*item) for item in list(items)]

    def of_type(self, event_type: str) -> list[Published]:
        return [event for event in self if event.type == event_type]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Recorder:
    recorder = Recorder(clock)
    monkeypatch.setattr(services, "publish", recorder.publish)
    monkeypatch.setattr(services, "publish_many", recorder.publish_many)
    return recorder


@pytest.fixture(autouse=True)
def coalescer(clock: FakeClock, scheduler: ManualScheduler) -> Iterator[coalesce.Coalescer]:
    """Every test gets a fresh in-memory coalescer on the fake clock: no timers, no state between tests."""
    instance = services.new_coalescer(store=coalesce.MemoryStore(clock), schedule=scheduler, window_secs=WINDOW_SECS)
    services.set_coalescer(instance)
    yield instance
    services.set_coalescer(None)


@pytest.fixture
def alice(db: None) -> Any:
    return make_member("alice", "Alice")


@pytest.fixture
def bob(db: None) -> Any:
    return make_member("bob")


@pytest.fixture
def video(alice: Any) -> Any:
    return make_video(alice, "keynote")


@pytest.fixture
def ended_video(alice: Any) -> Any:
    return make_video(alice, "yesterday", ended=True)


def wait_until_queued(commit: GroupCommit, count: int) -> None:
    """Until `count` items wait behind the batch being written (bounded: 5 s). GroupCommit signals nothing on
    arrival, so this looks every 10 ms."""
    for _ in range(500):
        with commit._changed:
            if len(commit._queue) >= count:
                return
        threading.Event().wait(0.01)
    raise AssertionError(f"never {count} waiting")
