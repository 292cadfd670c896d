"""The Node tests' server: a real Daphne worker from the system tests' fixtures."""

from tests.system.conftest import site, start_worker  # noqa: F401 (shared fixtures)
