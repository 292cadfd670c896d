"""Fixtures for presence tests: an in-memory store and a recorder in place of the real-time publisher."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from presence import services


@pytest.fixture
def presence_settings(settings: Any) -> dict[str, Any]:
    """PRESENCE on the in-memory store with a 10 s window; the store is rebuilt from them (setting_changed)."""
    settings.PRESENCE = {
        "HEARTBEAT_SECS": 4.0,
        "OFFLINE_AFTER_SECS": 10.0,
        "SWEEP_SECS": 0.02,
        "RECONCILE_SECS": 60.0,
    }
    return settings.PRESENCE


class Published(list):
    """Every (topic, type, data) handed to the publisher, in order; `fail_with` makes the publisher raise."""

    fail_with: Exception | None = None


@pytest.fixture
async def published(monkeypatch: pytest.MonkeyPatch, presence_settings: dict[str, Any]) -> AsyncIterator[Published]:
    sent = Published()

    async def fake_apublish(topic: str, event_type: str, data: Any) -> None:
        if sent.fail_with is not None:
            raise sent.fail_with
        sent.append((topic, event_type, data))

    monkeypatch.setattr(services, "apublish", fake_apublish)
    yield sent
    # A transition's table copy runs in a thread after the test's last await; the database is flushed at
    # teardown, and a write still running then makes the flush fail ("database table is locked").
    await services.aflush_table_writes()
    services.reset_store()
