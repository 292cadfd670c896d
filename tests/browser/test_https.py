"""Chromium over HTTPS and HTTP/2 through the shipped nginx site, in front of two workers: what an operator
gets by following docs/deploy.md. Over HTTP/1.1 the 6th watch-page tab of a browser would stall (6
connections per host, one held by each tab's stream); over HTTP/2 every tab shares one connection."""

import secrets

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.browser.test_watch_page import open_watch
from tests.system.harness import ROOT
from tests.system.test_nginx import nginx  # noqa: F401 (the shared fixture)

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(90)]

TABS = 8
PROTOCOL = "performance.getEntriesByType('navigation')[0].nextHopProtocol"


def test_members_like_comment_and_keep_eight_tabs_live_over_https_and_http2(
    browser,
    redis_server,
    start_worker,
    nginx,  # noqa: F811
    video,
):
    # The documented production environment: the public origin, the proxy's headers believed.
    public = {"PUBLIC_ORIGIN": nginx.origin, "TRUST_PROXY_HEADERS": "true", "SECRET_KEY": secrets.token_urlsafe(50)}
    workers = [start_worker(redis_server.url, name=name, **public, **FAST_PRESENCE) for name in ("one", "two")]
    # Pages name their static files unhashed here (no collectstatic in the test): nginx serves the sources.
    nginx.start(workers, static_root=ROOT / "static")
    origin = nginx.origin
    context_a = browser.new_context(ignore_https_errors=True)
    context_b = browser.new_context(ignore_https_errors=True)
    try:
        page_b = sign_in(context_b, origin, "bob")
        open_watch(page_b, origin, video)
        page_a = sign_in(context_a, origin, "alice")
        open_watch(page_a, origin, video)
        assert page_a.evaluate(PROTOCOL) == "h2"
        assert page_a.evaluate("location.protocol") == "https:"
        expect(page_b.get_by_role("list", name="Viewers").get_by_label("alice, online")).to_be_visible(timeout=10_000)

        like_count_b = page_b.get_by_label("Like count")
        before = int(like_count_b.inner_text())
        page_a.get_by_role("button", name="Like").click()
        expect(like_count_b).to_have_text(str(before + 1), timeout=10_000)
        page_a.get_by_role("textbox", name="Comment").fill("hello over h2")
        page_a.get_by_role("button", name="Send").click()
        expect(page_b.get_by_role("list", name="Comments")).to_contain_text("hello over h2", timeout=10_000)

        # Eight more tabs of alice's browser, all opened before any is awaited: all live at once.
        tabs = [context_a.new_page() for _ in range(TABS)]
        for tab in tabs:
            tab.goto(f"{origin}/videos/{video['slug']}/", wait_until="commit", timeout=15_000)
        for tab in tabs:
            expect(tab.get_by_role("status", name="Connection")).to_have_text("live", timeout=20_000)
            expect(tab.get_by_label("Like count")).to_have_text(str(before + 1), timeout=10_000)
        assert [tab.evaluate(PROTOCOL) for tab in tabs] == ["h2"] * TABS

        # A like made meanwhile by bob reaches every one of them (and alice's first tab) through its stream.
        page_b.get_by_role("button", name="Like").click()
        for tab in [page_a, *tabs]:
            expect(tab.get_by_label("Like count")).to_have_text(str(before + 2), timeout=10_000)
        for tab in tabs:
            expect(tab.get_by_role("status", name="Connection")).to_have_text("live")
    finally:
        context_a.close()
        context_b.close()
