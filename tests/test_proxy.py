"""Signing in, and a session's real-time calls, through a TLS-terminating proxy (X-Forwarded-Proto: https)."""

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User

from livesite.asgi import application

pytestmark = pytest.mark.django_db(transaction=True)

# What nginx sends for https://127.0.0.1/ when it terminates TLS (proxy_set_header X-Forwarded-Proto $scheme).
PROXIED = {"X-Forwarded-Proto": "https", "Origin": "https://127.0.0.1"}


@pytest.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    await sync_to_async(User.objects.create_user)("alice", password="pw-alice")
    transport = httpx.ASGITransport(app=application)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def _sign_in(browser: httpx.AsyncClient) -> httpx.Response:
    page = await browser.get("/accounts/login/", headers=PROXIED)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    form = {"username": "alice", "password": "pw-alice", "csrfmiddlewaretoken": token.group(1)}
    return await browser.post("/accounts/login/", data=form, headers={**PROXIED, "Referer": "https://127.0.0.1/"})


async def test_without_trusting_the_proxy_signing_in_is_refused(browser: httpx.AsyncClient, settings: Any) -> None:
    # The state an operator met: Django saw http, the browser's Origin said https.
    response = await _sign_in(browser)
    assert response.status_code == 403


async def test_trusting_the_proxy_headers_signs_in_and_the_session_can_publish(
    browser: httpx.AsyncClient, settings: Any
) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = await _sign_in(browser)
    assert response.status_code == 302, response.text[:300]
    # The same session's real-time call through the proxy: Django's CSRF check in realtime.auth agrees.
    csrf = browser.cookies["csrftoken"]
    response = await browser.post(
        "/realtime/subscriptions",
        json={"connection_id": "gone", "topics": ["video.1.likes"]},
        headers={**PROXIED, "X-CSRFToken": csrf},
    )
    assert response.status_code == 404  # past the CSRF check: only the connection is unknown
