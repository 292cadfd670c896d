"""The presence test table, shared by the pure state-machine tests and both stores' tests.

Each case is a script of heartbeats and sweeps at fixed times (seconds after T0, a realistic epoch so float
precision is exercised as in production) and the transitions each step must produce.
"""

from dataclasses import dataclass

from presence.status import CHANGED_AT_STEP_SECS, OFFLINE, ONLINE

T0 = 1_700_000_000.0
OFFLINE_AFTER_SECS = 10.0


def at(offset: float) -> float:
    return T0 + offset


@dataclass(frozen=True)
class Beat:
    at: float
    members: tuple[int, ...]


@dataclass(frozen=True)
class Sweep:
    at: float


# (status, member, last_seen, changed_at), sorted by member within a step.
Transition = tuple[str, int, float, float]


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[tuple[Beat | Sweep, tuple[Transition, ...]], ...]
    # Final (status, last_seen, changed_at) per member.
    final: dict[int, tuple[str, float | None, float | None]]


def on(member: int, seen: float, changed: float | None = None) -> Transition:
    return (ONLINE, member, at(seen), at(seen) if changed is None else changed)


def off(member: int, seen: float, changed: float) -> Transition:
    return (OFFLINE, member, at(seen), at(changed))


NOTHING: tuple[Transition, ...] = ()

CASES = [
    Case(
        "first heartbeat brings a member online",
        ((Beat(at(0), (1,)), (on(1, 0),)),),
        {1: (ONLINE, at(0), at(0)), 2: (OFFLINE, None, None)},
    ),
    Case(
        "steady heartbeats change nothing after the first",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),
            (Sweep(at(4)), NOTHING),
            (Beat(at(4), (1,)), NOTHING),
            (Sweep(at(8)), NOTHING),
            (Beat(at(8), (1,)), NOTHING),
            (Sweep(at(12)), NOTHING),
            (Beat(at(12), (1,)), NOTHING),
            (Sweep(at(21.5)), NOTHING),
        ),
        {1: (ONLINE, at(12), at(0))},
    ),
    Case(
        "a gap shorter than the window changes nothing",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),
            (Sweep(at(9.5)), NOTHING),
            (Beat(at(9.5), (1,)), NOTHING),
            (Sweep(at(19)), NOTHING),
        ),
        {1: (ONLINE, at(9.5), at(0))},
    ),
    Case(
        "a gap longer than the window: offline once, then online again at the next heartbeat",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),
            (Sweep(at(10.5)), (off(1, 0, 10.5),)),
            (Sweep(at(11)), NOTHING),
            (Beat(at(12), (1,)), (on(1, 12),)),
        ),
        {1: (ONLINE, at(12), at(12))},
    ),
    Case(
        "two devices are one member: online while either beats, one offline after the last stops",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),  # phone
            (Beat(at(2), (1,)), NOTHING),  # laptop
            (Beat(at(4), (1,)), NOTHING),  # phone, then it stops
            (Beat(at(6), (1,)), NOTHING),  # laptop
            (Sweep(at(15)), NOTHING),  # the phone is silent for 11 s, the laptop for 9 s
            (Beat(at(10), (1,)), NOTHING),  # laptop, then it stops
            (Sweep(at(20.5)), (off(1, 10, 20.5),)),
            (Sweep(at(30)), NOTHING),
        ),
        {1: (OFFLINE, at(10), at(20.5))},
    ),
    Case(
        "heartbeat exactly at the boundary keeps the member online",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),
            (Sweep(at(10)), NOTHING),  # silent for exactly OFFLINE_AFTER_SECS: not more than it
            (Beat(at(10), (1,)), NOTHING),
            (Sweep(at(20)), NOTHING),
            (Sweep(at(20.25)), (off(1, 10, 20.25),)),
        ),
        {1: (OFFLINE, at(10), at(20.25))},
    ),
    Case(
        "one heartbeat call for many members announces only those who were offline, each once",
        (
            (Beat(at(0), (1, 2)), (on(1, 0), on(2, 0))),
            (Beat(at(3), (2, 3, 3, 1, 4)), (on(3, 3), on(4, 3))),
            (Sweep(at(13.5)), (off(1, 3, 13.5), off(2, 3, 13.5), off(3, 3, 13.5), off(4, 3, 13.5))),
        ),
        {n: (OFFLINE, at(3), at(13.5)) for n in (1, 2, 3, 4)},
    ),
    Case(
        "a worker with a slow clock: last_seen never goes back and changed_at still increases",
        (
            (Beat(at(0), (1,)), (on(1, 0),)),
            (Beat(at(5), (1,)), NOTHING),
            (Beat(at(3), (1,)), NOTHING),  # late and stamped earlier: ignored for last_seen
            (Sweep(at(15.5)), (off(1, 5, 15.5),)),
            (Beat(at(14), (1,)), (on(1, 14, at(15.5) + CHANGED_AT_STEP_SECS),)),
        ),
        {1: (ONLINE, at(14), at(15.5) + CHANGED_AT_STEP_SECS)},
    ),
]
