"""The coalescing protocol on its own: fake clock, fake database counter, memory and Redis stores."""

import itertools
import math
from collections.abc import Iterator

import pytest

from likes.coalesce import Coalescer, MemoryStore, RedisStore, lock_key, mark_key
from tests.clocks import FakeClock, ManualScheduler

WINDOW = 0.25


class FakeVideo:
    """The database side: a committed like total, and what was emitted."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.total = 0
        self.events: list[tuple[float, int, int]] = []  # (when, total, covered)

    def read_total(self, video_id: int) -> int:
        return self.total

    def emit(self, video_id: int, total: int, covered: int) -> None:
        self.events.append((self.clock.now, total, covered))


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, clock: FakeClock) -> Iterator[MemoryStore | RedisStore]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    import redis

    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    client.flushdb()
    yield RedisStore(client)
    client.close()


def make(store: MemoryStore | RedisStore, fake: FakeVideo, scheduler: ManualScheduler) -> Coalescer:
    return Coalescer(store, window_secs=WINDOW, read_total=fake.read_total, emit=fake.emit, schedule=scheduler)


def like(fake: FakeVideo, coalescer: Coalescer) -> None:
    fake.total += 1  # committed first ...
    coalescer.like_committed(7)  # ... then its on_commit callback


def test_the_first_like_opens_a_window_and_its_flush_announces_it(store, clock, scheduler):
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    like(fake, coalescer)
    assert fake.events == []
    assert len(scheduler) == 1
    scheduler.advance(WINDOW)
    assert fake.events == [(clock.now, 1, 1)]


def test_a_burst_across_two_processes_is_bounded_and_exact(store, clock, scheduler):
    # Two workers share one store (Redis in production); likes alternate between them, 1 ms apart.
    fake = FakeVideo(clock)
    workers = [make(store, fake, scheduler), make(store, fake, scheduler)]
    for n in range(1000):
        like(fake, workers[n % 2])
        scheduler.advance(0.001)
    scheduler.run_all()
    assert sum(covered for _, _, covered in fake.events) == 1000
    assert fake.events[-1][1] == 1000
    assert len(fake.events) <= math.ceil(1.0 / WINDOW) + 1
    times = [at for at, _, _ in fake.events]
    assert all(later - earlier >= WINDOW for earlier, later in itertools.pairwise(times))


def test_likes_while_a_window_is_open_only_wait_for_its_flush(store, clock, scheduler):
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    like(fake, coalescer)
    scheduler.advance(0.1)
    like(fake, coalescer)
    like(fake, coalescer)
    assert len(scheduler) == 1
    scheduler.advance(WINDOW)
    assert [(total, covered) for _, total, covered in fake.events] == [(3, 3)]


def test_a_like_after_the_flush_released_the_lock_opens_the_next_window(store, clock, scheduler):
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    like(fake, coalescer)
    scheduler.advance(WINDOW)
    like(fake, coalescer)
    scheduler.advance(WINDOW)
    assert [(total, covered) for _, total, covered in fake.events] == [(1, 1), (2, 1)]


def test_a_flush_that_read_an_older_total_announces_nothing(store, clock, scheduler):
    # A slow flush reads 5, a newer one publishes 9 first: the slow one must not take the count back.
    assert store.advance(mark_key(7), 9) is None
    assert store.advance(mark_key(7), 5) == 9
    assert store.advance(mark_key(7), 12) == 9
    assert store.advance(mark_key(7), 12) == 12


def test_a_late_flush_does_not_free_a_later_takers_window(store):
    assert store.acquire(lock_key(7), "first", 10)
    assert not store.acquire(lock_key(7), "second", 10)
    store.release(lock_key(7), "someone-else")
    assert not store.acquire(lock_key(7), "second", 10)
    store.release(lock_key(7), "first")
    assert store.acquire(lock_key(7), "second", 10)


def test_videos_have_independent_windows(store, clock, scheduler):
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    assert coalescer.like_committed(1)
    assert coalescer.like_committed(2)
    assert not coalescer.like_committed(1)


def test_a_window_whose_holder_died_expires_and_the_next_like_announces_everything(clock, scheduler):
    store = MemoryStore(clock)
    fake = FakeVideo(clock)
    dead = make(store, fake, lambda delay, fn: None)  # its process died: its flush never runs
    like(fake, dead)
    alive = make(store, fake, scheduler)
    like(fake, alive)  # lock still held by the dead process: nothing scheduled
    assert len(scheduler) == 0
    clock.now += alive.lock_ttl_secs
    like(fake, alive)
    scheduler.run_all()
    assert [(total, covered) for _, total, covered in fake.events] == [(3, 3)]


def test_a_video_gone_before_the_flush_announces_nothing(clock, scheduler):
    coalescer = Coalescer(
        MemoryStore(clock),
        window_secs=WINDOW,
        read_total=lambda video_id: None,
        emit=lambda *args: pytest.fail("emitted for a deleted video"),
        schedule=scheduler,
    )
    coalescer.like_committed(7)
    scheduler.run_all()


def test_a_like_landing_while_a_flush_reads_is_announced_by_a_later_event(store, clock, scheduler):
    # The race the release-first order exists for: a like commits just after the flush read the total.
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    racing = iter([True])

    def read_then_race(video_id: int) -> int:
        total = fake.total
        if next(racing, False):
            like(fake, coalescer)
        return total

    coalescer.read_total = read_then_race
    like(fake, coalescer)
    scheduler.run_all()
    assert [(total, covered) for _, total, covered in fake.events] == [(1, 1), (2, 1)]


class ManyVideos:
    """The database side for several videos, with the batch reads and announcements the site uses."""

    def __init__(self) -> None:
        self.totals: dict[int, int] = {}
        self.reads: list[list[int]] = []
        self.emitted: list[list[tuple[int, int, int]]] = []

    def read_totals(self, video_ids) -> dict[int, int]:
        self.reads.append(list(video_ids))
        return {video_id: self.totals[video_id] for video_id in video_ids if video_id in self.totals}

    def emit_many(self, rises) -> None:
        self.emitted.append(list(rises))


def make_batched(store, videos: ManyVideos, scheduler: ManualScheduler, run_flush) -> Coalescer:
    return Coalescer(
        store,
        window_secs=WINDOW,
        read_total=lambda video_id: pytest.fail("read one by one"),
        emit=lambda *rise: pytest.fail("emitted one by one"),
        schedule=scheduler,
        read_totals=videos.read_totals,
        emit_many=videos.emit_many,
        run_flush=run_flush,
    )


def test_windows_that_come_due_while_a_flush_runs_are_flushed_together_by_the_next(store, clock, scheduler):
    videos = ManyVideos()
    started: list = []  # flushes handed to the flusher thread, run when the test says
    coalescer = make_batched(store, videos, scheduler, started.append)
    for video_id in (1, 2, 3):
        videos.totals[video_id] = video_id
        coalescer.like_committed(video_id)
        scheduler.advance(0.01)
    scheduler.advance(WINDOW)  # all three windows come due; only the first hands a flush to the thread
    assert len(started) == 1
    started.pop()()
    assert videos.reads == [[1, 2, 3]]
    assert videos.emitted == [[(1, 1, 1), (2, 2, 2), (3, 3, 3)]]
    assert coalescer.stats["flushes"] == 1
    # The flush is over: the next window that comes due starts a flush of its own.
    videos.totals[2] = 5
    coalescer.like_committed(2)
    scheduler.advance(WINDOW)
    started.pop()()
    assert videos.emitted[-1] == [(2, 5, 3)]
    assert store.acquire(lock_key(1), "someone", 10)  # the flushed windows were released


def test_a_process_holding_a_window_does_not_ask_the_store_again_until_its_flush_releases(clock, scheduler):
    store = MemoryStore(clock)
    asked: list[str] = []
    real_acquire = store.acquire

    def acquire(key: str, token: str, ttl_secs: float) -> bool:
        asked.append(key)
        return real_acquire(key, token, ttl_secs)

    store.acquire = acquire  # type: ignore[method-assign]
    fake = FakeVideo(clock)
    coalescer = make(store, fake, scheduler)
    for _ in range(5):
        like(fake, coalescer)
    assert asked == [lock_key(7)]
    assert coalescer.holds() == 1
    scheduler.advance(WINDOW)
    assert coalescer.holds() == 0
    like(fake, coalescer)
    assert asked == [lock_key(7), lock_key(7)]
    scheduler.run_all()
    assert [(total, covered) for _, total, covered in fake.events] == [(5, 5), (6, 1)]


def test_a_failed_flush_is_logged_and_the_next_window_flushes(clock, scheduler, caplog):
    videos = ManyVideos()
    coalescer = make_batched(MemoryStore(clock), videos, scheduler, None)
    failing = iter([True])

    def read_totals(video_ids):
        if next(failing, False):
            raise RuntimeError("database gone")
        return videos.read_totals(video_ids)

    coalescer.read_totals = read_totals
    videos.totals[1] = 1
    coalescer.like_committed(1)
    scheduler.advance(WINDOW)
    assert "database gone" in caplog.text
    videos.totals[1] = 2
    coalescer.like_committed(1)
    scheduler.advance(WINDOW)
    assert videos.emitted == [[(1, 2, 2)]]


def test_likes_committed_soon_ask_for_their_windows_in_the_flushers_next_round_with_its_releases(clock, scheduler):
    store = MemoryStore(clock)
    trips: list[tuple[list, list]] = []
    real = store.release_and_acquire

    def release_and_acquire(windows, keys, token, ttl_secs):
        trips.append(([key for key, _ in windows], list(keys)))
        return real(windows, keys, token, ttl_secs)

    store.release_and_acquire = release_and_acquire  # type: ignore[method-assign]
    videos = ManyVideos()
    started: list = []
    coalescer = make_batched(store, videos, scheduler, started.append)
    videos.totals[1] = 1
    coalescer.likes_committed_soon([1])
    assert trips == []  # the caller (the likes writer) never waits for the store
    started.pop()()
    assert trips == [([], [lock_key(1)])]
    assert coalescer.holds() == 1
    # The window of video 1 comes due while likes of videos 1 and 2 were committed: one round trip for all,
    # and video 1 needs no new window (the flush reads its total after these likes committed).
    scheduler.advance(WINDOW)
    videos.totals |= {1: 3, 2: 1}
    coalescer.likes_committed_soon([1, 2])
    started.pop()()
    assert trips[1:] == [([lock_key(1)], [lock_key(2)])]
    assert videos.emitted == [[(1, 3, 3)]]
    scheduler.advance(WINDOW)
    started.pop()()
    assert videos.emitted[-1] == [(2, 1, 1)]
    assert started == []


def test_windows_not_asked_for_because_the_store_failed_are_handed_over(clock, scheduler):
    store = MemoryStore(clock)

    def down(*args):
        raise ConnectionError("redis is down")

    store.release_and_acquire = down  # type: ignore[method-assign]
    handed: list[tuple[list[int], str]] = []
    coalescer = make_batched(store, ManyVideos(), scheduler, None)
    coalescer.on_unannounced = lambda video_ids, exc: handed.append((video_ids, str(exc)))
    coalescer.likes_committed_soon([3, 2])
    assert handed == [([2, 3], "redis is down")]
    assert coalescer.holds() == 0
    coalescer.likes_committed_soon([4])  # the flusher is not stuck
    assert handed[-1] == ([4], "redis is down")
