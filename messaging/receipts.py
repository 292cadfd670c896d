"""Seen receipts, coalesced: at most one `receipt.seen` per participant per window, across workers, never backwards.

The protocol is likes.coalesce's, per participant (a member in a conversation) instead of per video:
1. A read mark moves forward and commits, THEN its on_commit callback tries to take the participant's window
   lock (SET NX with a token and a TTL). The taker schedules a flush at the end of the window.
2. The flush releases the lock first (if it still holds its token), THEN reads the committed read mark,
   raises the participant's published mark to it atomically (never lowering it) and announces it if it rose.

So every forward move is announced (the flush that follows it reads a mark at least as far), marks in the
database only rise (services.mark_read), and a flush that read an older mark than one already announced
announces nothing. Two flushes of one participant are a window apart, so their events reach the topic in
order; pages still ignore a receipt below the one they hold, which makes even a delayed one harmless.
Failure model: as likes.coalesce (a process killed holding a window delays that window's receipt to the next
read after the lock's TTL; Redis down, marks are stored but not announced until the next read).
"""

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from likes.coalesce import LOCK_TTL_WINDOWS, MIN_LOCK_TTL_SECS, Scheduler, Store
from realtime import stores

# The published mark outlives any quiet spell that matters; if it expires, the next flush announces the
# current mark again (the same seq: harmless, pages ignore it).
MARK_TTL_SECS = 7 * 86_400


@dataclass(frozen=True)
class ReadMark:
    participant_id: int
    conversation_id: int
    member_id: int
    seq: int
    message_id: int | None
    unread: int


def lock_key(participant_id: int) -> str:
    return stores.key("messaging", "receipt", int(participant_id), "window")


def mark_key(participant_id: int) -> str:
    return stores.key("messaging", "receipt", int(participant_id), "published")


class Coalescer:
    """Turns committed read marks into at most one `emit(mark)` per participant per window.

    `read(participant_id)` returns the committed mark (None: she left); it and `emit` run on the scheduler's
    thread. Thread-safe.
    """

    def __init__(
        self,
        store: Store,
        *,
        window_secs: float,
        read: Callable[[int], ReadMark | None],
        emit: Callable[[ReadMark], None],
        schedule: Scheduler,
    ) -> None:
        self.store = store
        self.window_secs = window_secs
        self.lock_ttl_secs = max(LOCK_TTL_WINDOWS * window_secs, MIN_LOCK_TTL_SECS)
        self.read = read
        self.emit = emit
        self.schedule = schedule

    def read_committed(self, participant_id: int) -> bool:
        """Call after a participant's read mark moved forward and committed; True if this call will flush."""
        token = secrets.token_hex(8)
        if not self.store.acquire(lock_key(participant_id), token, self.lock_ttl_secs):
            return False
        self.schedule(self.window_secs, partial(self.flush, participant_id, token))
        return True

    def flush(self, participant_id: int, token: str) -> None:
        """End the window `token` opened: release first, then read and announce (see the module doc)."""
        self.store.release(lock_key(participant_id), token)
        mark = self.read(participant_id)
        if mark is None or mark.seq <= 0:
            return
        previous = self.store.advance(mark_key(participant_id), mark.seq)
        if previous is None or mark.seq > previous:
            self.emit(mark)
