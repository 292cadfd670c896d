"""System checks of the REALTIME settings and the channel layer."""

from typing import Any

import pytest

from realtime.checks import check_realtime_settings

LAYER = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"capacity": 100_000, "group_expiry": 60}}


def _ids(settings: Any, layer: dict[str, Any] | None = None, **realtime: Any) -> list[str]:
    settings.REALTIME = {"LEASE_SECS": 60.0, **realtime}
    settings.CHANNEL_LAYERS = {} if layer is None else {"default": layer}
    return [problem.id for problem in check_realtime_settings(None)]


def test_the_defaults_pass(settings: Any) -> None:
    assert _ids(settings, LAYER) == []


def test_a_missing_layer_is_an_error(settings: Any) -> None:
    assert _ids(settings) == ["realtime.E001"]


def test_groups_outliving_the_lease_are_an_error(settings: Any) -> None:
    assert _ids(settings, {**LAYER, "CONFIG": {"capacity": 100_000, "group_expiry": 86400}}) == ["realtime.E002"]


def test_the_channel_layers_default_capacity_is_a_warning(settings: Any) -> None:
    assert _ids(settings, {**LAYER, "CONFIG": {"group_expiry": 60}}) == ["realtime.W001"]


def test_keepalives_must_have_a_positive_interval(settings: Any) -> None:
    assert _ids(settings, LAYER, KEEPALIVE_SECS=0) == ["realtime.E003"]


@pytest.mark.parametrize(
    ("flush_ms", "expected"), [(0, []), (20, []), (1000, []), (-1, ["realtime.E004"]), (1001, ["realtime.E004"])]
)
def test_the_flush_interval_is_bounded(settings: Any, flush_ms: float, expected: list[str]) -> None:
    assert _ids(settings, LAYER, FLUSH_MS=flush_ms) == expected


def test_peers_without_a_secret_are_an_error(settings: Any) -> None:
    assert _ids(settings, LAYER, PEERS={"dc2": "http://127.0.0.1:9"}, PEER_SECRET="") == ["realtime.E005"]
    assert _ids(settings, LAYER, PEERS={"dc2": "http://127.0.0.1:9"}, PEER_SECRET="s") == []
