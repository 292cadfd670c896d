"""A worker's per-topic order: in offset order, each event once, holes filled from history or announced."""

from realtime.history import NO_EPOCH, Position, Replay
from realtime.sequencer import Sequencer


def frames(*offsets: int) -> list[bytes]:
    return [b"%d" % offset for offset in offsets]


def test_events_in_order_pass_at_once() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("e", 4))
    release = sequencer.admit("t", "e", 5, frames(5, 6))
    assert (release.offsets, release.frames, release.gap, release.hole) == ([5, 6], frames(5, 6), False, False)
    assert sequencer.positions["t"] == Position("e", 6)


def test_a_round_that_overtook_another_waits_for_it_then_both_go_in_order() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("e", 4))
    early = sequencer.admit("t", "e", 7, frames(7))
    assert early.frames == []
    assert early.hole
    late = sequencer.admit("t", "e", 5, frames(5, 6))
    assert late.offsets == [5, 6, 7]
    assert not late.hole
    assert sequencer.stats["held_rounds"] == 1


def test_events_before_the_join_or_seen_already_are_dropped() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("e", 4))
    assert sequencer.admit("t", "e", 3, frames(3, 4)).frames == []
    assert sequencer.admit("t", "e", 4, frames(4, 5)).offsets == [5]
    assert sequencer.stats["duplicate_events"] == 3


def test_a_hole_is_filled_from_the_history() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("e", 4))
    sequencer.admit("t", "e", 8, frames(8))
    asked = sequencer.positions["t"]
    release = sequencer.fill("t", asked, Replay(True, Position("e", 8), frames(5, 6, 7, 8)))
    assert release.offsets == [5, 6, 7, 8]
    assert not release.gap
    assert not sequencer.has_hole("t")
    # The lost round turns up after all: already delivered, dropped.
    assert sequencer.admit("t", "e", 5, frames(5, 6)).frames == []


def test_a_hole_the_history_cannot_fill_is_a_gap_then_delivery_goes_on() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("e", 4))
    sequencer.admit("t", "e", 8, frames(8, 9))
    release = sequencer.fill("t", Position("e", 4), Replay(False, Position("e", 9)))
    assert release.gap
    assert release.offsets == [8, 9]
    assert sequencer.positions["t"] == Position("e", 9)
    assert sequencer.admit("t", "e", 10, frames(10)).offsets == [10]


def test_a_new_epoch_is_a_gap_and_starts_from_its_first_offset() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position("old", 40))
    release = sequencer.admit("t", "new", 1, frames(1))
    assert release.gap
    assert release.offsets == [1]
    # A new epoch whose first events are still on their way: held, not skipped.
    sequencer.start("u", Position("old", 40))
    assert sequencer.admit("u", "new", 3, frames(3)).hole


def test_joined_before_the_first_event_the_first_epoch_is_no_gap() -> None:
    sequencer = Sequencer()
    sequencer.start("t", Position(NO_EPOCH, 0))
    release = sequencer.admit("t", "e", 1, frames(1))
    assert (release.offsets, release.gap) == ([1], False)


def test_a_check_after_a_fault_delivers_what_was_lost_or_says_gap() -> None:
    sequencer = Sequencer()
    sequencer.start("kept", Position("e", 2))
    sequencer.start("flushed", Position("e", 2))
    kept = sequencer.fill("kept", Position("e", 2), Replay(True, Position("e", 4), frames(3, 4)))
    assert (kept.offsets, kept.gap) == ([3, 4], False)
    flushed = sequencer.fill("flushed", Position("e", 2), Replay(False, Position(NO_EPOCH, 0)))
    assert flushed.gap
    # Redis came back empty: the next epoch's first event follows with no second gap.
    assert sequencer.admit("flushed", "f", 1, frames(1)).gap is False


def test_topics_without_history_pass_untouched() -> None:
    sequencer = Sequencer()
    release = sequencer.admit("typing", "", 0, frames(1, 1))
    assert (release.offsets, release.frames) == ([0, 0], frames(1, 1))
    assert "typing" not in sequencer.positions
