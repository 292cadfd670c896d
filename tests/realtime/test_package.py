"""The package's documented Python API works whatever else has been imported."""

import importlib
import pkgutil

import pytest

import realtime


def _every_module() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(realtime.__path__, "realtime.")]


def test_every_module_imports() -> None:
    for name in _every_module():
        importlib.import_module(name)


@pytest.mark.django_db
def test_publish_and_apublish_are_callable_after_every_module_is_imported() -> None:
    for name in _every_module():
        importlib.import_module(name)
    assert callable(realtime.publish)
    assert callable(realtime.apublish)
    event = realtime.publish("tests.package", "thing.happened", {"n": 1})
    assert event.topic == "tests.package"
    assert event.type == "thing.happened"
