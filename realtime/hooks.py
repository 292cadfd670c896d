"""Plug-in points of every worker, registered by the apps that use them from their AppConfig.ready.

The core calls these and knows nothing of who registered them (presence records heartbeats, the census
counts subscribers). Each hook is a plain async function:
- member heartbeat: `async def beat(member_ids: list[int]) -> None`, called with the members holding a
  stream on this worker when a member's stream opens or closes, and every REALTIME HEARTBEAT_SECS;
- background task: `async def job() -> None`, run for the worker's lifetime, restarted after a back-off if
  it returns or fails;
- periodic job: `async def job(worker) -> None`, called every `interval_secs` with the started Worker;
- stats: `def figures() -> Mapping[str, float]`, read into every worker snapshot under the app's prefix
  (`/realtime/stats`, `/metrics`).
"""

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime.worker import Worker

# What calling an `async def` returns. Its yield and send types are asyncio's business, hence Any, as in
# typeshed's own `create_task`. A heartbeat call runs as a task, which takes a coroutine, not any awaitable.
Coro = Coroutine[Any, Any, None]
MemberHeartbeat = Callable[[list[int]], Coro]
BackgroundTask = Callable[[], Awaitable[None]]
PeriodicJob = Callable[["Worker"], Awaitable[None]]


@dataclass(frozen=True)
class Periodic:
    interval_secs: Callable[[], float]  # read when the worker starts, so settings may change it (tests)
    job: PeriodicJob


member_heartbeats: list[MemberHeartbeat] = []
background_tasks: list[BackgroundTask] = []
periodic_jobs: list[Periodic] = []
stats_providers: dict[str, Callable[[], Mapping[str, float]]] = {}


def on_member_heartbeat(handler: MemberHeartbeat) -> MemberHeartbeat:
    if handler not in member_heartbeats:
        member_heartbeats.append(handler)
    return handler


def add_background_task(job: BackgroundTask) -> BackgroundTask:
    if job not in background_tasks:
        background_tasks.append(job)
    return job


def add_periodic(interval_secs: Callable[[], float], job: PeriodicJob) -> PeriodicJob:
    if all(entry.job is not job for entry in periodic_jobs):
        periodic_jobs.append(Periodic(interval_secs, job))
    return job


def add_stats(prefix: str, figures: Callable[[], Mapping[str, float]]) -> None:
    """Report an app's counters in every worker snapshot, as `<prefix>_<name>`."""
    stats_providers[prefix] = figures
