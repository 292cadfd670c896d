"""The pure presence state machine, with fixed clocks: the shared table, plus its invariants."""

import pytest

from presence import status
from presence.status import MemberState
from tests.presence.cases import CASES, OFFLINE_AFTER_SECS, Beat, Case, at


def _key(row: status.MemberStatus) -> tuple:
    return (row.status, row.member, row.last_seen, row.changed_at)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_table(case: Case) -> None:
    state: dict[int, MemberState] = {}
    for step, expected in case.steps:
        original, snapshot = state, dict(state)
        if isinstance(step, Beat):
            state, changes = status.beat(state, step.members, step.at)
        else:
            state, changes = status.sweep(state, step.at, OFFLINE_AFTER_SECS)
        assert sorted(map(_key, changes), key=lambda row: row[1]) == list(expected), step
        assert original == snapshot, "the input state must not be modified"
    rows = status.read(state, list(case.final))
    assert {row.member: (row.status, row.last_seen, row.changed_at) for row in rows} == case.final


def test_inputs_are_never_modified() -> None:
    state = {1: MemberState(True, at(0), at(0))}
    frozen = dict(state)
    status.beat(state, [1, 2], at(1))
    status.sweep(state, at(100), OFFLINE_AFTER_SECS)
    assert state == frozen


def test_sweep_returns_oldest_first_and_keeps_last_seen() -> None:
    state, _ = status.beat({}, [1], at(2))
    state, _ = status.beat(state, [2], at(1))
    state, _ = status.beat(state, [3], at(30))
    _, gone = status.sweep(state, at(20), OFFLINE_AFTER_SECS)
    assert [(row.member, row.last_seen) for row in gone] == [(2, at(1)), (1, at(2))]


def test_changed_at_strictly_increases_even_when_now_goes_back() -> None:
    assert status.next_changed_at(None, 5.0) == 5.0
    assert status.next_changed_at(4.0, 5.0) == 5.0
    assert status.next_changed_at(at(7), at(5)) == at(7) + status.CHANGED_AT_STEP_SECS
    assert status.next_changed_at(at(7), at(5)) > at(7)


def test_online_lists_online_members_most_recent_first() -> None:
    state, _ = status.beat({}, [1, 2], at(0))
    state, _ = status.beat(state, [2], at(5))
    state, _ = status.sweep(state, at(11), OFFLINE_AFTER_SECS)  # 1 goes offline
    state, _ = status.beat(state, [3], at(6))
    assert [(row.member, row.last_seen) for row in status.online(state)] == [(3, at(6)), (2, at(5))]


def test_event_data_has_the_documented_shape() -> None:
    row = status.MemberStatus(7, status.ONLINE, at(1), at(1))
    assert row.as_data() == {"member": 7, "status": "online", "last_seen": at(1), "changed_at": at(1)}
