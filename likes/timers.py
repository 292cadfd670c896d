"""Timers and threads of the likes path: call_later() runs a sync function after a delay off the request thread;
call_later_on_loop() and in_thread() split that in two, so that many due calls can share one run.

Under Daphne, sync views run in threads that asgiref ties to the server's event loop. The function must
run in such a thread too: realtime.publish() from there reaches the channel layer on that loop (the
in-memory layer only works there, and channels-redis keeps its connections there). Without a running
loop (a management command, a shell) a daemon threading.Timer runs it instead.
"""

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import close_old_connections

from likes import db

logger = logging.getLogger(__name__)

# Strong references to scheduled tasks: the event loop keeps only weak ones.
_tasks: set["asyncio.Task[Any]"] = set()


def server_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop this thread belongs to: its own, or the one asgiref ran it from; else None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        pass
    # Set by asgiref's sync_to_async in the threads it runs sync code in (how async_to_sync finds it too).
    local = SyncToAsync.threadlocal
    loop = getattr(local, "main_event_loop", None)
    if loop is None or getattr(local, "main_event_loop_pid", None) != os.getpid():
        return None
    return loop if loop.is_running() and not loop.is_closed() else None


def call_later(delay_secs: float, fn: Callable[[], None]) -> None:
    """Call the sync `fn` once, `delay_secs` from now, in a worker thread; its exceptions are logged."""
    loop = server_loop()
    if loop is None:
        timer = threading.Timer(delay_secs, _run, args=(fn,))
        timer.daemon = True
        timer.start()
    else:
        loop.call_soon_threadsafe(loop.call_later, delay_secs, _start_task, fn)


def _run(fn: Callable[[], None]) -> None:
    # Outside a request nothing closes this thread's database connection; honour CONN_MAX_AGE ourselves.
    close_old_connections()
    try:
        fn()
    except Exception:
        logger.exception("scheduled call %r failed", fn)
    finally:
        close_old_connections()


def call_later_on_loop(delay_secs: float, fn: Callable[[], None]) -> None:
    """Call `fn` once, `delay_secs` from now, on the server's event loop (without one, on a timer thread).

    For cheap, thread-safe, never blocking calls only (likes.coalesce queues a due window): no thread hop per
    call. Its exceptions are logged."""
    loop = server_loop()
    if loop is None:
        timer = threading.Timer(delay_secs, _logged, args=(fn,))
        timer.daemon = True
        timer.start()
    else:
        loop.call_soon_threadsafe(loop.call_later, delay_secs, _logged, fn)


def in_thread(
    executor: ThreadPoolExecutor, *, keep_connection: Callable[[], bool]
) -> Callable[[Callable[[], None]], None]:
    """A runner: `run(fn)` calls the sync `fn` soon in `executor`'s thread, tied to the server's loop (so publish()
    works from there), logging its exceptions. That thread's database connection stays open after `fn` while
    `keep_connection()` says more work is coming (likes.db). Without a loop, `fn` runs at once in the caller's
    thread, closing its connections as call_later does."""

    def run(fn: Callable[[], None]) -> None:
        loop = server_loop()
        if loop is None:
            _run(fn)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            _start_warm_task(fn, executor, keep_connection)
        else:
            loop.call_soon_threadsafe(_start_warm_task, fn, executor, keep_connection)

    return run


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        logger.exception("scheduled call %r failed", fn)


def _start_task(fn: Callable[[], None]) -> None:
    # thread_sensitive=False: a flush must not queue behind the requests sharing the main sync thread.
    task = asyncio.ensure_future(sync_to_async(_run, thread_sensitive=False)(fn))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _start_warm_task(fn: Callable[[], None], executor: ThreadPoolExecutor, keep_connection: Callable[[], bool]) -> None:
    task = asyncio.ensure_future(
        sync_to_async(_run_warm, thread_sensitive=False, executor=executor)(fn, keep_connection)
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


def _run_warm(fn: Callable[[], None], keep_connection: Callable[[], bool]) -> None:
    db.begin()
    try:
        fn()
    except Exception:
        logger.exception("scheduled call %r failed", fn)
    finally:
        db.end(keep=keep_connection())
