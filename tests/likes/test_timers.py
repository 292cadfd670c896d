"""call_later: where a flush runs, with and without the server's event loop."""

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync, sync_to_async

from likes import timers


def test_without_an_event_loop_it_runs_on_a_timer_thread():
    ran = threading.Event()
    where: list[threading.Thread] = []

    def job() -> None:
        where.append(threading.current_thread())
        ran.set()

    def caller() -> None:
        # A fresh thread has no event loop, whatever else this test process runs (Playwright keeps one).
        where.append(threading.current_thread())
        assert timers.server_loop() is None
        timers.call_later(0.01, job)

    thread = threading.Thread(target=caller)
    thread.start()
    thread.join(5)
    assert ran.wait(5)
    assert where[1] is not where[0]


async def test_from_a_view_thread_it_runs_in_a_worker_thread_tied_to_the_servers_loop():
    # A sync view under Daphne runs through sync_to_async; so does this function.
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    seen: dict[str, object] = {}

    def job() -> None:
        seen["thread"] = threading.current_thread()
        seen["loop"] = timers.server_loop()
        # What realtime.publish does from here: async_to_sync must run on the server's loop.
        seen["ran_on"] = async_to_sync(_running_loop)()
        loop.call_soon_threadsafe(done.set)

    def view() -> None:
        assert timers.server_loop() is loop
        timers.call_later(0.01, job)

    await sync_to_async(view)()
    await asyncio.wait_for(done.wait(), 5)
    assert seen["thread"] is not threading.current_thread()
    assert seen["loop"] is loop
    assert seen["ran_on"] is loop


async def _running_loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


def test_a_failing_job_is_logged_not_raised(caplog):
    ran = threading.Event()

    def job() -> None:
        ran.set()
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="likes.timers"):
        # On a thread of its own, as call_later runs it (and with no database connection of its own).
        thread = threading.Thread(target=timers._run, args=(job,))
        thread.start()
        thread.join(5)
    assert ran.is_set()
    assert "scheduled call" in caplog.text
    assert "boom" in caplog.text


async def test_on_the_loop_a_due_call_runs_on_the_loop_itself():
    loop = asyncio.get_running_loop()
    ran = asyncio.Event()
    seen: dict[str, object] = {}

    def due() -> None:
        seen["thread"] = threading.current_thread()
        ran.set()

    timers.call_later_on_loop(0.01, due)
    await asyncio.wait_for(ran.wait(), 5)
    assert seen["thread"] is threading.current_thread()
    assert loop.is_running()


async def test_in_thread_runs_in_its_executor_tied_to_the_loop_and_keeps_the_connection_only_if_told():
    from concurrent.futures import ThreadPoolExecutor

    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-flusher")
    keep = [True]
    done = asyncio.Event()
    seen: list[tuple[str, object]] = []

    def job() -> None:
        seen.append((threading.current_thread().name, timers.server_loop()))
        loop.call_soon_threadsafe(done.set)

    run = timers.in_thread(executor, keep_connection=lambda: keep[0])
    try:
        run(job)
        await asyncio.wait_for(done.wait(), 5)
        assert seen == [(seen[0][0], loop)]
        assert seen[0][0].startswith("test-flusher")
    finally:
        executor.shutdown(wait=True)
