"""The request id: one per HTTP request, carried through the cross-worker call it makes, in every log line.

Taken from the proxy's `X-Request-ID` when it is a plain token (nginx's `$request_id`), so a line of the
proxy's log and the workers' lines of the same request share it; otherwise made here. A context variable:
each request's task (and the threads Django's views run in, which copy the context) sees its own.
"""

import itertools
import re
import secrets
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str] = ContextVar("request_id", default="-")

_VALID = re.compile(rb"[A-Za-z0-9._-]{1,64}")
# A random prefix per process and a counter: unique across workers, made without a system call per request
# (secrets.token_hex reads the OS's random source each time: a few % of a worker at thousands of POSTs/s).
_PREFIX = secrets.token_hex(4)
_SEQUENCE = itertools.count()


def begin(scope: dict[str, Any]) -> str:
    """Set this request's id from its `X-Request-ID` header, or a new one; returns it."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            if _VALID.fullmatch(value):
                found = bytes(value).decode("ascii")
                request_id.set(found)
                return found
            break
    made = f"{_PREFIX}{next(_SEQUENCE):08x}"
    request_id.set(made)
    return made
