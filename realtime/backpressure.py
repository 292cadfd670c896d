"""Tells a Connection when its socket stops draining, where the ASGI server can say so (Daphne).

ASGI has no backpressure for `send`, and Daphne queues every write in Twisted's unbounded buffer. Twisted
does offer push producers: registered on a request, they are paused when the socket's buffer passes 64 KB
and resumed once it drains. Daphne hands its request object to the app only as the first argument of the
`send` partial, so this adapter looks there, and does nothing under any other server.
"""

import asyncio
import logging
from typing import Any

from realtime.hub import Connection

logger = logging.getLogger(__name__)


class _Producer:
    __slots__ = ("conn", "resuming")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.resuming: asyncio.Task[None] | None = None

    def pauseProducing(self) -> None:
        self.conn.pause()

    def resumeProducing(self) -> None:
        # Called from the reactor, which runs on the asyncio loop under Daphne.
        self.resuming = asyncio.get_running_loop().create_task(self.conn.resume())

    def stopProducing(self) -> None:
        # The server reports the disconnect to the stream's task, which cleans up.
        pass


def watch(send: Any, conn: Connection) -> bool:
    """Register `conn` for pause/resume notices if the server supports it; True if it did."""
    request = (getattr(send, "args", None) or (None,))[0]
    register = getattr(request, "registerProducer", None)
    if register is None:
        return False
    try:
        register(_Producer(conn), True)
    except (ValueError, RuntimeError):
        logger.warning("could not watch connection %s for backpressure", conn.id, exc_info=True)
        return False
    return True
