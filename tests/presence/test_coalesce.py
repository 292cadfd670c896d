"""The coalescer: concurrent callers share one job call at a time, and each sees its batch's outcome."""

import asyncio

import pytest

from presence.coalesce import Coalescer


async def test_callers_of_one_loop_turn_share_one_call_and_later_ones_the_next() -> None:
    calls: list[list[int]] = []
    release = asyncio.Event()

    async def job(ids: list[int]) -> None:
        calls.append(ids)
        await release.wait()

    run = Coalescer(job)
    first = [asyncio.create_task(run([n])) for n in (1, 2, 2)]
    await asyncio.sleep(0.01)
    assert calls == [[1, 2]]  # running: the next callers wait for the next batch
    second = [asyncio.create_task(run([n, 9])) for n in (3, 4)]
    await asyncio.sleep(0.01)
    assert calls == [[1, 2]]
    release.set()
    await asyncio.gather(*first, *second)
    assert calls == [[1, 2], [3, 9, 4]]
    await run([5])
    assert calls[-1] == [5]


async def test_a_failure_reaches_every_caller_of_its_batch_only() -> None:
    async def job(ids: list[int]) -> None:
        if 13 in ids:
            raise RuntimeError("unlucky")

    run = Coalescer(job)
    results = await asyncio.gather(run([1]), run([13]), return_exceptions=True)
    assert [type(result) for result in results] == [RuntimeError, RuntimeError]
    await run([2])  # the next batch runs normally


async def test_a_cancelled_caller_does_not_cancel_the_batch_of_the_others() -> None:
    started, release, finished = asyncio.Event(), asyncio.Event(), []

    async def job(ids: list[int]) -> None:
        started.set()
        await release.wait()
        finished.append(ids)

    run = Coalescer(job)
    impatient, patient = asyncio.create_task(run([1])), asyncio.create_task(run([2]))
    await started.wait()
    impatient.cancel()
    with pytest.raises(asyncio.CancelledError):
        await impatient
    release.set()
    await patient
    assert finished == [[1, 2]]
