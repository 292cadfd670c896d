"""The presence state machine: heartbeats in, online/offline transitions out. Pure: no I/O, `now` is a parameter."""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ONLINE = "online"
OFFLINE = "offline"
# Successive transitions of one member get strictly increasing `changed_at`, even when the clocks of two
# workers disagree: a client keeps the event with the larger `changed_at`, so equal stamps would be ambiguous.
# 1 microsecond is well above the resolution of a double holding epoch seconds (about 0.24 microseconds).
CHANGED_AT_STEP_SECS = 1e-6


@dataclass(frozen=True, slots=True)
class MemberState:
    """What the store keeps per member: online, when last heard of, and when the status last changed."""

    online: bool
    last_seen: float
    changed_at: float


@dataclass(frozen=True, slots=True)
class MemberStatus:
    """One member's presence as the API returns it and as a `presence.changed` event carries it.

    `last_seen` and `changed_at` are epoch seconds, None for a member never seen.
    """

    member: int
    status: str
    last_seen: float | None
    changed_at: float | None

    def as_data(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "status": self.status,
            "last_seen": self.last_seen,
            "changed_at": self.changed_at,
        }


State = Mapping[int, MemberState]


def next_changed_at(previous: float | None, now: float) -> float:
    """The stamp of a new transition: `now`, but always after the previous transition of the same member."""
    if previous is None:
        return now
    return max(now, previous + CHANGED_AT_STEP_SECS)


def is_expired(last_seen: float, now: float, offline_after: float) -> bool:
    """Whether a member last seen at `last_seen` has been silent for MORE than `offline_after` seconds at `now`.

    Written as a comparison with `now - offline_after`, exactly as the Redis store's range query does, so both
    stores agree to the last bit at the boundary.
    """
    return last_seen < now - offline_after


def status_of(member: int, state: State) -> MemberStatus:
    entry = state.get(member)
    if entry is None:
        return MemberStatus(member, OFFLINE, None, None)
    return MemberStatus(member, ONLINE if entry.online else OFFLINE, entry.last_seen, entry.changed_at)


def beat(state: State, member_ids: Iterable[int], now: float) -> tuple[dict[int, MemberState], list[MemberStatus]]:
    """Record a heartbeat at `now` for each member; returns the new state and the members that just came online.

    A member already online only has its `last_seen` moved forward (never back: a late heartbeat from a worker
    with a slower clock does not rewind it). Offline is never decided here, only by `sweep`.
    """
    new = dict(state)
    newly_online = []
    for member in dict.fromkeys(member_ids):
        entry = new.get(member)
        if entry is not None and entry.online:
            if now > entry.last_seen:
                new[member] = MemberState(True, now, entry.changed_at)
            continue
        changed_at = next_changed_at(None if entry is None else entry.changed_at, now)
        new[member] = MemberState(True, now, changed_at)
        newly_online.append(MemberStatus(member, ONLINE, now, changed_at))
    return new, newly_online


def sweep(state: State, now: float, offline_after: float) -> tuple[dict[int, MemberState], list[MemberStatus]]:
    """Take offline every online member silent for more than `offline_after` seconds at `now`.

    Returns the new state and the members that just went offline, oldest `last_seen` first (the order of the
    Redis store's range query). Their `last_seen` stays the time of their last heartbeat.
    """
    expired = sorted(
        (entry.last_seen, member)
        for member, entry in state.items()
        if entry.online and is_expired(entry.last_seen, now, offline_after)
    )
    if not expired:
        return dict(state), []
    new = dict(state)
    newly_offline = []
    for last_seen, member in expired:
        changed_at = next_changed_at(state[member].changed_at, now)
        new[member] = MemberState(False, last_seen, changed_at)
        newly_offline.append(MemberStatus(member, OFFLINE, last_seen, changed_at))
    return new, newly_offline


def read(state: State, member_ids: Iterable[int]) -> list[MemberStatus]:
    """The status of each member, in the order asked."""
    return [status_of(member, state) for member in member_ids]


def online(state: State) -> list[MemberStatus]:
    """Every online member, most recently seen first."""
    rows = [status_of(member, state) for member, entry in state.items() if entry.online]
    return sorted(rows, key=lambda row: (-(row.last_seen or 0.0), row.member))
