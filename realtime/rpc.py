"""Cross-worker calls: a subscription request reaches the worker that holds the connection, wherever it came in.

A request goes as a message on the holder's worker channel and its answer comes back on the caller's; each
call waits at most `timeout_secs`. Refusals travel as stable codes, never HTTP statuses: the endpoint that
answers the client maps codes to statuses (realtime.endpoints).
"""

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from realtime import context
from realtime.dispatcher import REPLY, RPC, Dispatcher, LayerMessage
from realtime.metrics import Histogram

logger = logging.getLogger(__name__)

# The refusal codes a subscription change can end with.
UNKNOWN_CONNECTION = "unknown_connection"
NOT_YOUR_CONNECTION = "not_your_connection"
FORBIDDEN_TOPIC = "forbidden_topic"
TOO_MANY_TOPICS = "too_many_topics"
UNAVAILABLE = "realtime_unavailable"


class Refused(Exception):
    """A refused request: a stable code and a message for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Rpc:
    """Calls out of this worker and their answers. Async; one event loop."""

    def __init__(self, dispatcher: Dispatcher, channel: str, *, timeout_secs: float) -> None:
        self.dispatcher = dispatcher
        self.channel = channel
        self.timeout_secs = timeout_secs
        self._replies: dict[int, asyncio.Future[LayerMessage]] = {}
        self._ids = itertools.count(1)
        self.stats = {"rpc_sent": 0, "rpc_served": 0, "rpc_timeouts": 0}
        self.seconds = Histogram()

    async def acall(self, channel: str, request: LayerMessage) -> Any:
        """Send `request` to the worker on `channel`; its answer's `result`, or Refused with its code.

        The result is Any: it is what the other worker's handler returned, as it came off the channel layer.
        """
        started = time.perf_counter()
        rid = next(self._ids)
        reply: asyncio.Future[LayerMessage] = asyncio.get_running_loop().create_future()
        self._replies[rid] = reply
        self.stats["rpc_sent"] += 1
        try:
            message = {
                **request,
                "type": RPC,
                "reply_to": self.channel,
                "rid": rid,
                "request_id": context.request_id.get(),
            }
            await self.dispatcher.asend(channel, message)
            answer = await asyncio.wait_for(reply, self.timeout_secs)
        except (RedisError, OSError) as exc:
            raise Refused(UNAVAILABLE, f"the real-time layer is unreachable ({exc}): retry shortly") from None
        except TimeoutError:
            self.stats["rpc_timeouts"] += 1
            raise Refused(UNKNOWN_CONNECTION, "the worker holding this connection did not answer: reconnect") from None
        finally:
            self._replies.pop(rid, None)
            self.seconds.observe(time.perf_counter() - started)
        if "code" in answer:
            raise Refused(answer["code"], answer["message"])
        return answer["result"]

    def answered(self, message: LayerMessage) -> None:
        """A REPLY arrived on this worker's channel."""
        future = self._replies.get(message.get("rid"))  # type: ignore[arg-type]
        if future is not None and not future.done():
            future.set_result(message)

    async def aserve(self, message: LayerMessage, handler: Callable[[LayerMessage], Awaitable[object]]) -> None:
        """Answer an RPC message with `await handler(message)`, or its refusal."""
        self.stats["rpc_served"] += 1
        # This task was spawned for the call: the caller's request id is its own from here on.
        context.request_id.set(str(message.get("request_id", "-"))[:64])
        reply: LayerMessage = {"type": REPLY, "rid": message["rid"]}
        try:
            reply["result"] = await handler(message)
        except Refused as exc:
            reply.update(code=exc.code, message=exc.message)
        await self.dispatcher.asend(message["reply_to"], reply)
