"""Fixtures of the real-time tests."""

from collections.abc import AsyncIterator

import httpx
import pytest

from livesite.asgi import application


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the whole ASGI app, in process, calling from 127.0.0.1."""
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http
