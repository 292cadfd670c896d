"""The dispatcher's rounds: every publisher hears how its round ended, whatever went wrong."""

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer

from realtime.dispatcher import Dispatcher


class _Boom(RuntimeError):
    pass


async def test_an_unexpected_failure_reaches_the_publishers_and_the_next_round_goes_on() -> None:
    dispatcher = Dispatcher(InMemoryChannelLayer())
    calls = 0
    real_round = dispatcher._group_send_each

    async def failing_once(pending: dict[str, list[bytes]]) -> dict[str, BaseException]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise _Boom("injected")
        return await real_round(pending)

    dispatcher._group_send_each = failing_once  # type: ignore[method-assign]

    with pytest.raises(_Boom):
        await asyncio.wait_for(dispatcher.asend_events([("a.b", b"x")]), 2)
    await asyncio.wait_for(dispatcher.asend_events([("a.b", b"y")]), 2)
    assert dispatcher.stats["failed_rounds"] == 1
    assert dispatcher.stats["published"] == 1


async def test_publishers_waiting_on_a_cancelled_round_are_told() -> None:
    dispatcher = Dispatcher(InMemoryChannelLayer())
    started = asyncio.Event()

    async def never(pending: dict[str, list[bytes]]) -> dict[str, BaseException]:
        started.set()
        await asyncio.Event().wait()
        return {}

    dispatcher._group_send_each = never  # type: ignore[method-assign]
    publisher = asyncio.ensure_future(dispatcher.asend_events([("a.b", b"x")]))
    await started.wait()
    assert dispatcher._flusher is not None
    dispatcher._flusher.cancel()
    with pytest.raises(Exception, match="stopped"):
        await asyncio.wait_for(publisher, 2)
