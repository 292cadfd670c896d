"""A worker's order per topic: events reach its streams in offset order, each once; holes filled or announced.

Two publishers can race: one's round gets offsets 5-6, the other's 7, and the second's message reaches a
worker first. A message can also be lost on the way (a worker channel full, Redis restarting). Either way a
topic's offsets jump. The sequencer holds what came early, lets the caller fetch the missing events from
the topic's history after a short wait (realtime.worker), and, when the history cannot supply them (trimmed,
lost with Redis), says so: the caller sends the topic's subscribers a `gap` frame instead of a silence.

Pure: no I/O, no clock. Events of topics without history (no epoch) pass through untouched.
"""

from dataclasses import dataclass, field

from realtime.history import NO_EPOCH, Position, Replay


@dataclass(slots=True)
class Release:
    """What may be delivered for a topic now: a gap first (if any), then frames in offset order."""

    offsets: list[int] = field(default_factory=list)
    frames: list[bytes] = field(default_factory=list)
    gap: bool = False
    # Events wait behind a missing one: the caller should repair the topic (read its history) soon.
    hole: bool = False

    def add(self, first: int, frames: list[bytes]) -> None:
        self.offsets.extend(range(first, first + len(frames)))
        self.frames.extend(frames)


class Sequencer:
    def __init__(self) -> None:
        # topic -> the last offset delivered to this worker's streams, in which epoch.
        self.positions: dict[str, Position] = {}
        # topic -> {first offset: frames} of rounds that came ahead of a missing one.
        self.held: dict[str, dict[int, list[bytes]]] = {}
        self.stats = {"held_rounds": 0, "duplicate_events": 0, "filled_events": 0, "gaps": 0}

    def start(self, topic: str, position: Position | None) -> None:
        """The worker registered for `topic` when the topic stood at `position` (None: no history).

        Everything after it will reach the worker; nothing before it will. Kept if the topic is tracked already.
        """
        if position is not None:
            self.positions.setdefault(topic, position)

    def forget(self, topic: str) -> None:
        """The worker no longer hosts `topic`."""
        self.positions.pop(topic, None)
        self.held.pop(topic, None)

    def has_hole(self, topic: str) -> bool:
        return bool(self.held.get(topic))

    def admit(self, topic: str, epoch: str, first: int, frames: list[bytes]) -> Release:
        """One round's events of `topic` (offsets first, first+1, ...) as they arrived."""
        release = Release()
        if not epoch:
            release.offsets = [0] * len(frames)
            release.frames = frames
            return release
        position = self.positions.get(topic)
        if position is None:
            # Never registered with a position (a registration repaired in bulk): start from here.
            position = Position(epoch, first - 1)
        elif position.epoch != epoch:
            if position.epoch != NO_EPOCH:
                # The topic's history was lost (a new epoch): what happened in between cannot be known.
                release.gap = True
                self.stats["gaps"] += 1
                self.held.pop(topic, None)
            position = Position(epoch, 0)
        self.positions[topic] = position
        self._take(topic, first, frames, release)
        release.hole = self.has_hole(topic)
        return release

    def fill(self, topic: str, asked: Position, replay: Replay) -> Release:
        """The history read for a hole, made after `asked`: deliver what it holds, or announce a gap."""
        release = Release()
        position = self.positions.get(topic)
        if position is None or position.epoch != asked.epoch:
            return release  # The topic was dropped, or moved to a new epoch, meanwhile.
        if replay.recovered:
            if position.epoch == NO_EPOCH:
                self.positions[topic] = Position(replay.head.epoch, 0)  # Joined before the topic's first event.
            before = len(release.frames)
            self._take(topic, replay.first_offset, replay.frames, release)
            self.stats["filled_events"] += len(release.frames) - before
        if not replay.recovered or self.has_hole(topic):
            # Missing from the history too (trimmed, or lost with Redis): the streams are told, and go on from
            # the next events held, or from where the topic stands now.
            release.gap = True
            self.stats["gaps"] += 1
            held = self.held.get(topic)
            if held:
                self.positions[topic] = Position(position.epoch, min(held) - 1)
                self._release(topic, release)
            else:
                self.positions[topic] = replay.head
            if not replay.recovered and replay.frames and replay.head.epoch != position.epoch:
                # A new epoch began (Redis failed over) and the history holds it from its first event: those
                # are delivered after the gap, not skipped.
                self.held.pop(topic, None)  # the old epoch's: the gap covers them
                self.positions[topic] = Position(replay.head.epoch, replay.first_offset - 1)
                before = len(release.frames)
                self._take(topic, replay.first_offset, replay.frames, release)
                self.stats["filled_events"] += len(release.frames) - before
        release.hole = self.has_hole(topic)
        return release

    def _take(self, topic: str, first: int, frames: list[bytes], release: Release) -> None:
        last = self.positions[topic].offset
        end = first + len(frames) - 1
        if end <= last:
            self.stats["duplicate_events"] += len(frames)
            return
        if first > last + 1:
            self.held.setdefault(topic, {})[first] = frames
            self.stats["held_rounds"] += 1
            return
        release.add(last + 1, frames[last + 1 - first :])
        self.stats["duplicate_events"] += last + 1 - first
        self.positions[topic] = Position(self.positions[topic].epoch, end)
        self._release(topic, release)

    def _release(self, topic: str, release: Release) -> None:
        """Deliver held rounds that now follow on."""
        held = self.held.get(topic)
        while held:
            last = self.positions[topic].offset
            ready = [first for first in held if first <= last + 1]
            if not ready:
                return
            for first in sorted(ready):
                frames = held.pop(first)
                last = self.positions[topic].offset
                end = first + len(frames) - 1
                if end > last:
                    release.add(last + 1, frames[last + 1 - first :])
                    self.positions[topic] = Position(self.positions[topic].epoch, end)
        if held is not None and not held:
            del self.held[topic]
