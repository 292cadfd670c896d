"""Stream tickets: how a client that authenticates with a token opens an EventSource, which cannot send headers.

`POST /realtime/tickets` (token or session) answers a ticket: 256 random bits, valid for TICKET_SECS, good for
ONE `GET /realtime/connect?ticket=...`. Never the long-lived token in a URL (URLs end up in proxy logs and
browser history). A ticket only points at the credential it was made with: using it checks that credential
again (a token deleted or a member deactivated since is refused), and the stream is revoked with it.

Kept in Redis with REDIS_URL (taken with GETDEL, so two workers cannot both use one), else in this process.
"""

import secrets
import threading
import time

from realtime import stores

TICKET_SECS = 30


class MemoryTickets:
    def __init__(self) -> None:
        self._tickets: dict[str, tuple[float, str, str]] = {}
        self._lock = threading.Lock()

    async def aissue(self, scheme: str, secret: str, *, now: float | None = None) -> str:
        ticket = secrets.token_urlsafe(32)
        now = time.time() if now is None else now
        with self._lock:
            # Bounded: expired tickets go whenever a new one is made.
            for key in [key for key, (expires, _, _) in self._tickets.items() if expires <= now]:
                del self._tickets[key]
            self._tickets[ticket] = (now + TICKET_SECS, scheme, secret)
        return ticket

    async def atake(self, ticket: str, *, now: float | None = None) -> tuple[str, str] | None:
        with self._lock:
            found = self._tickets.pop(ticket, None)
        if found is None or found[0] <= (time.time() if now is None else now):
            return None
        return found[1], found[2]


class RedisTickets:
    def __init__(self, url: str | None = None) -> None:
        self.url = url

    async def aissue(self, scheme: str, secret: str, *, now: float | None = None) -> str:
        ticket = secrets.token_urlsafe(32)
        key = stores.key("ticket", ticket)
        await stores.aclient(stores.server_for(key, self.url)).set(key, f"{scheme} {secret}", ex=TICKET_SECS)
        return ticket

    async def atake(self, ticket: str, *, now: float | None = None) -> tuple[str, str] | None:
        key = stores.key("ticket", ticket)
        found = await stores.aclient(stores.server_for(key, self.url)).getdel(key)
        if found is None:
            return None
        text = found.decode() if isinstance(found, bytes) else str(found)
        scheme, _, secret = text.partition(" ")
        return scheme, secret


_tickets: stores.Slot[MemoryTickets | RedisTickets] = stores.Slot(memory=MemoryTickets, redis=RedisTickets)


def get() -> MemoryTickets | RedisTickets:
    return _tickets.get()
