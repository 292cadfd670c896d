"""Server-Sent Events framing: bytes for one frame, safe against injected line breaks. Pure."""

import re

# The SSE spec ends a line at CR, LF or CRLF; any of them inside a field would start a new field.
_LINE_BREAK = re.compile(r"[\r\n]")


def _check_field(name: str, value: str) -> str:
    if _LINE_BREAK.search(value):
        raise ValueError(f"SSE {name} must not contain CR or LF")
    return value


def frame(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event frame. `data` may span lines: each becomes its own `data:` line, as the spec requires."""
    lines = []
    if id is not None:
        lines.append(f"id: {_check_field('id', id)}")
    if event is not None:
        lines.append(f"event: {_check_field('event', event)}")
    lines.extend(f"data: {line}" for line in _LINE_BREAK.split(data.replace("\r\n", "\n")))
    return ("\n".join(lines) + "\n\n").encode()


def comment(text: str = "") -> bytes:
    """A comment frame: ignored by EventSource, used as keep-alive."""
    return f": {_check_field('comment', text)}\n\n".encode() if text else b":\n\n"


def retry(milliseconds: int) -> bytes:
    """The client's reconnection delay."""
    return f"retry: {int(milliseconds)}\n\n".encode()
