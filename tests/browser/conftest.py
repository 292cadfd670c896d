"""Debian's chromium driven by playwright (never a downloaded browser), against real Daphne workers."""

import json
import shutil
from collections.abc import Iterator

import pytest

from tests.system.conftest import redis_server, site, start_worker, tokens  # noqa: F401 (shared fixtures)
from tests.system.harness import base_env, run_django

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Presence scaled down so the real algorithm runs in test time: beats every 0.3 s, offline after 1.2 s.
FAST_PRESENCE = {"PRESENCE_HEARTBEAT_SECS": "0.3", "PRESENCE_OFFLINE_AFTER_SECS": "1.2", "REALTIME_CENSUS_SECS": "0.5"}


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed (apt-get install chromium); .ci/run installs it")
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def video(site: dict) -> dict:  # noqa: F811
    """A live video owned by admin, created in the shared test database."""
    code = """
import json, uuid
from django.contrib.auth.models import User
from likes.models import LiveVideo
slug = "test-" + uuid.uuid4().hex[:8]
video = LiveVideo.objects.create(title="Browser test " + slug, slug=slug, owner=User.objects.get(username="admin"))
print(json.dumps({"id": video.pk, "slug": slug}))
"""
    return json.loads(run_django(base_env(site["tmp"]), code))


def sign_in(context: object, base_url: str, username: str) -> object:
    page = context.new_page()
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(f"pw-{username}")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    return page
