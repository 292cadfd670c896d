"""likes.db: the writer's and the flusher's connection stays open while work is waiting, and only then."""

from typing import Any

import pytest
from django.db import connection

from likes import db

# Autocommit, as in the writer thread (inside a transaction the connection is never kept).
pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What closed connections: Django's CONN_MAX_AGE policy, or a close of the connection itself."""
    calls: list[str] = []
    monkeypatch.setattr(db, "close_old_connections", lambda: calls.append("policy"))
    real_close = connection.close

    def close() -> None:
        calls.append("close")
        real_close()

    monkeypatch.setattr(connection, "close", close)
    return calls


def _query() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_a_batch_with_more_waiting_keeps_its_connection(closes: list[str]) -> None:
    _query()
    db.end(keep=True)
    assert closes == []
    assert connection.connection is not None


def test_the_last_batch_of_a_burst_hands_the_connection_to_django_s_policy(closes: list[str]) -> None:
    _query()
    db.end(keep=False)
    assert closes == ["policy"]


def test_a_connection_that_broke_is_not_kept(closes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _query()
    monkeypatch.setattr(connection, "errors_occurred", True)
    monkeypatch.setattr(connection, "is_usable", lambda: False)
    db.end(keep=True)
    assert closes == ["close"]


def test_a_connection_that_had_an_error_but_still_answers_is_kept(closes: list[str], monkeypatch: Any) -> None:
    _query()
    monkeypatch.setattr(connection, "errors_occurred", True)
    db.begin()
    assert closes == []
    assert connection.errors_occurred is False
