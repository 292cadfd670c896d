"""A clock tests move by hand, for code that takes `clock: Callable[[], float]`, and a scheduler that follows it."""

import heapq
import itertools
from collections.abc import Callable


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ManualScheduler:
    """A coalesce.Scheduler whose calls run only when the test advances the fake clock past them."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self._pending: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()

    def __call__(self, delay_secs: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._pending, (self.clock.now + delay_secs, next(self._seq), fn))

    def __len__(self) -> int:
        return len(self._pending)

    def advance(self, secs: float) -> None:
        target = self.clock.now + secs
        while self._pending and self._pending[0][0] <= target:
            due, _, fn = heapq.heappop(self._pending)
            self.clock.now = max(self.clock.now, due)
            fn()
        self.clock.now = target

    def run_all(self) -> None:
        while self._pending:
            self.advance(self._pending[0][0] - self.clock.now)
