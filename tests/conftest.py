"""Fixtures for every test."""

from collections.abc import Iterator

import pytest

from realtime import tokens


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    # Users and tokens are rolled back between tests; a cached user must not outlive them.
    tokens.reset_cache()
    yield
    tokens.reset_cache()
