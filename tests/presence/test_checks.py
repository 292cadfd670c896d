"""System checks: the offline window against the heartbeat interval, and the wiring into the worker."""

from typing import Any

import pytest

from presence.checks import check_presence_settings

WIRED = {"HEARTBEAT_SECS": 0.2}


def _ids(settings: Any, *, heartbeat: float = 0.2, offline_after: float = 0.6, **realtime: Any) -> list[str]:
    settings.PRESENCE = {"HEARTBEAT_SECS": heartbeat, "OFFLINE_AFTER_SECS": offline_after}
    settings.REDIS_URL = ""
    settings.REALTIME = {**WIRED, "HEARTBEAT_SECS": heartbeat, **realtime}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return [problem.id for problem in check_presence_settings(None)]


@pytest.mark.parametrize(
    ("heartbeat", "offline_after", "expected"),
    [
        (0.2, 0.6, []),
        (30, 75, []),
        (30, 67.5, []),
        (30, 60, []),  # exactly twice (the defaults): one failed heartbeat call is tolerated
        (30, 59.9, ["presence.E001"]),
        (30, 30, ["presence.E001"]),
        (0, 60, ["presence.E003"]),
    ],
)
def test_the_offline_window_must_cover_two_heartbeats(
    settings: Any, heartbeat: float, offline_after: float, expected: list[str]
) -> None:
    assert _ids(settings, heartbeat=heartbeat, offline_after=offline_after) == expected


def test_the_worker_and_presence_must_agree_on_the_heartbeat(settings: Any) -> None:
    assert _ids(settings, HEARTBEAT_SECS=0.3) == ["presence.E002"]


def test_presence_plugs_into_every_worker_through_the_core_hooks() -> None:
    from presence import services
    from realtime import hooks

    # Registered by PresenceConfig.ready: a worker records heartbeats AND sweeps, never one without the other.
    assert services.arecord_heartbeats in hooks.member_heartbeats
    assert services.asweep_forever in hooks.background_tasks


def test_several_workers_need_a_shared_store(settings: Any) -> None:
    _ids(settings)
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer"}}
    assert [problem.id for problem in check_presence_settings(None)] == ["presence.E005"]
