"""The site's pages in Chromium (#15): the home page's live cards, sign-in, the 404 page and the favicon, a phone's
390x844 layout, and an accessibility check (axe-core, from npm) with no serious violation on any page."""

import json
import re
import shutil
import subprocess
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.browser.test_watch_page import comment_as, end_video, make_video, open_watch

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(120)]

# Pinned: a new axe release adds rules, and a page that passed could fail for a reason nobody changed.
AXE_VERSION = "4.14.1"
# What fails the check. axe's impacts are minor, moderate, serious and critical; the two last are barriers
# (text that cannot be read, a control with no name, a region a keyboard cannot reach).
FAILING_IMPACTS = ("serious", "critical")
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 3}


@pytest.fixture(scope="session")
def axe_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """axe-core's axe.min.js, installed from npm once per session into a temporary folder (npm's own cache
    makes later runs offline). No npm, or no registry: the check fails and says why; it never skips."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the accessibility check needs axe-core from npm (apt-get install npm)")
    folder = tmp_path_factory.mktemp("axe")
    command = [npm, "install", "--prefer-offline", "--no-audit", "--no-fund", "--no-save", "--prefix", str(folder)]
    try:
        result = subprocess.run(
            [*command, f"axe-core@{AXE_VERSION}"], capture_output=True, text=True, timeout=90, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"npm install axe-core@{AXE_VERSION} took over 90 s: is the npm registry reachable?")
    if result.returncode != 0:
        pytest.fail(
            f"npm install axe-core@{AXE_VERSION} failed (exit {result.returncode}); the accessibility check needs "
            f"the npm registry or npm's cache:\n{result.stderr[-2_000:]}"
        )
    package = folder / "node_modules" / "axe-core"
    assert json.loads((package / "package.json").read_text())["version"] == AXE_VERSION
    return (package / "axe.min.js").read_text()


def serious_violations(page, axe_source: str) -> list[str]:
    """Run axe in the page (WCAG 2.x A and AA, and axe's best practices); one line per serious or critical
    violation, naming the rule, the elements and what to fix."""
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(content=axe_source)
    results = page.evaluate("() => axe.run(document, { resultTypes: ['violations'] })")
    lines = []
    for violation in results["violations"]:
        if violation["impact"] in FAILING_IMPACTS:
            for node in violation["nodes"]:
                lines.append(
                    f"{violation['id']} ({violation['impact']}): {violation['help']} at {node['target']}: "
                    f"{node.get('failureSummary', '')}"
                )
    return lines


@pytest.fixture
def seeded(site: dict) -> dict:
    """Two live videos and one ended, made for this test (the shared database holds other tests' videos too)."""
    return {"live": [make_video(site), make_video(site)], "ended": make_video(site, status="ended")}


def card(page, video: dict):
    return page.get_by_role("listitem").filter(has=page.get_by_role("link", name=video["title"], exact=True))


# -- the home page -----------------------------------------------------------------------------------------


def test_home_cards_show_live_counts_and_keep_ended_videos_apart(browser, start_worker, site, seeded, tokens):
    worker = start_worker(**FAST_PRESENCE)
    first, second = seeded["live"]
    home_context, viewer_context = browser.new_context(), browser.new_context()
    try:
        home = home_context.new_page()
        # The page's timers run on a clock the test can move: it rereads the cards every 60 s (a safety net).
        home.clock.install()
        home.goto(f"{worker.url}/")
        expect(home.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
        live_now = home.get_by_role("list", name="Live now")
        ended = home.get_by_role("list", name="Ended")
        expect(live_now.get_by_role("link", name=first["title"], exact=True)).to_be_visible()
        expect(ended.get_by_role("link", name=seeded["ended"]["title"], exact=True)).to_be_visible()
        expect(live_now.get_by_role("link", name=seeded["ended"]["title"], exact=True)).to_have_count(0)
        first_card = card(home, first)
        expect(first_card).to_contain_text("0 watching")
        expect(first_card).to_contain_text("0 likes")
        expect(first_card.locator(".badge")).to_have_text("LIVE")
        # The whole card is one link to the watch page, named by the video's title.
        expect(first_card.get_by_role("link")).to_have_attribute("href", f"/videos/{first['slug']}/")
        thumb = first_card.locator(".thumb").bounding_box()
        hit = home.evaluate(
            "([x, y]) => document.elementFromPoint(x, y).closest('a')?.getAttribute('href')",
            [thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2],
        )
        assert hit == f"/videos/{first['slug']}/"

        # Someone starts watching: the card's viewer count follows on the stream, with no reload.
        viewer = sign_in(viewer_context, worker.url, "bob")
        open_watch(viewer, worker.url, first)
        expect(first_card).to_contain_text("1 watching", timeout=10_000)
        for _ in range(2):
            viewer.get_by_role("button", name="Like").click()
        expect(viewer.get_by_label("Like count")).to_have_text("2", timeout=10_000)
        comment_as(worker.url, tokens["bob"], first, "hello")
        # The likes arrive on the stream (videos.likes), with no reread: the page's clock has not moved.
        expect(first_card).to_contain_text("2 likes", timeout=10_000)
        viewer.close()
        expect(first_card).to_contain_text("0 watching", timeout=10_000)

        # A video ended by another process (this worker has no Redis to hear it from) moves to "Ended" at the
        # next reread; one that starts is announced.
        end_video(site, second)
        newcomer = make_video(site)
        home.clock.fast_forward(61_000)
        expect(ended.get_by_role("link", name=second["title"], exact=True)).to_be_visible(timeout=10_000)
        expect(live_now.get_by_role("link", name=second["title"], exact=True)).to_have_count(0)
        expect(card(home, second).locator(".badge")).to_have_text("ENDED")
        expect(card(home, second)).not_to_contain_text("watching")
        notice = home.locator("#more-live")
        # (The shared test database may hold other tests' live videos past the page's first cards.)
        expect(notice).to_have_text(re.compile(r"^\d+ more live videos? started since this page loaded\. Show them$"))
        notice.get_by_role("link", name="Show them").click()
        expect(home.get_by_role("list", name="Live now").get_by_role("link", name=newcomer["title"])).to_be_visible()
    finally:
        home_context.close()
        viewer_context.close()


# -- sign-in, 404, favicon ---------------------------------------------------------------------------------


def test_a_wrong_password_keeps_the_username_and_says_what_failed(browser, start_worker):
    worker = start_worker()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{worker.url}/accounts/login/?next=/messages/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("not her password")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text(
            "That username and password do not match: check both and try again."
        )
        expect(page.get_by_label("Username")).to_have_value("alice")
        expect(page.get_by_label("Password")).to_have_value("")
        expect(page.get_by_label("Password")).to_be_focused()  # the field to fix, ready to type in
        page.get_by_label("Password").fill("pw-alice")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{worker.url}/messages/")  # where she was going
    finally:
        context.close()


def test_an_unknown_page_is_the_sites_own_404_and_no_page_misses_a_file(browser, start_worker, site):
    worker = start_worker(**FAST_PRESENCE)
    video = make_video(site)
    context = browser.new_context()
    failures: list[str] = []
    context.on("response", lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        page.goto(f"{worker.url}/accounts/login/")
        assert failures == []  # no favicon.ico, no stylesheet, no script missing on any page
        page.goto(f"{worker.url}/")
        expect(page.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
        # Browsers ask for /favicon.ico by themselves on pages that name no icon (the admin, the API's JSON).
        icon = httpx.get(f"{worker.url}/favicon.ico", follow_redirects=True, timeout=10)
        assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml"), icon.text
        assert page.evaluate("() => document.querySelector('link[rel=icon]').href").endswith("/static/web/favicon.svg")

        response = page.goto(f"{worker.url}/videos/no-such-video/")
        assert response is not None
        assert response.status == 404
        expect(page).to_have_title("Page not found · livesite")
        expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
        expect(page.get_by_role("main")).to_contain_text("/videos/no-such-video/")
        # Styled like the rest of the site (the site's dark background, not a browser default).
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(15, 17, 21)"
        expect(page.get_by_role("banner").get_by_text("Sign out")).to_be_visible()  # the site's own header
        page.get_by_role("link", name="See what is live now").click()
        page.wait_for_url(f"{worker.url}/")
        # API paths keep their JSON 404 (livesite.errors).
        assert httpx.get(f"{worker.url}/api/nope", timeout=10).json()["code"] == "not_found"
        assert failures == [f"404 {worker.url}/videos/no-such-video/"]
    finally:
        context.close()


# -- a phone -------------------------------------------------------------------------------------------------

NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


def assert_within_screen(page, locator, min_height: int = 0) -> None:
    box = locator.bounding_box()
    assert box is not None, f"{locator} is not shown"
    assert box["x"] >= 0, (locator, box)
    assert box["x"] + box["width"] <= 390 + 0.5, (locator, box)
    assert box["height"] >= min_height, (locator, box)


def test_a_phone_gets_one_column_with_nothing_sideways_and_thumb_sized_controls(browser, start_worker, seeded, tokens):
    worker = start_worker(**FAST_PRESENCE)
    video = seeded["live"][0]
    comment_as(worker.url, tokens["bob"], video, "a long comment " * 12 + "with-a-very-long-unbroken-word-" * 4)
    context = browser.new_context(**PHONE)
    try:
        page = context.new_page()
        page.goto(f"{worker.url}/accounts/login/")
        assert page.evaluate(NO_SIDEWAYS_SCROLL)
        for name in ("Username", "Password"):
            assert_within_screen(page, page.get_by_label(name), min_height=44)
        assert_within_screen(page, page.get_by_role("button", name="Sign in"), min_height=44)
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("pw-alice")
        page.get_by_role("button", name="Sign in").tap()
        page.wait_for_url(f"{worker.url}/")

        # Home: the cards in one column, each the screen's width.
        expect(page.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
        assert page.evaluate(NO_SIDEWAYS_SCROLL)
        boxes = [
            item.bounding_box() for item in page.get_by_role("list", name="Live now").get_by_role("listitem").all()
        ]
        assert len({box["x"] for box in boxes}) == 1, boxes  # one column
        assert all(box["width"] > 330 for box in boxes), boxes

        # Watch: the video across the screen, then the actions, then the chat; all usable by thumb.
        open_watch(page, worker.url, video)
        assert page.evaluate(NO_SIDEWAYS_SCROLL)
        screen = page.locator(".screen").bounding_box()
        assert screen["width"] > 350, screen
        assert screen["height"] > 190, screen
        like = page.get_by_role("button", name="Like")
        assert_within_screen(page, like, min_height=44)
        comments = page.get_by_role("list", name="Comments")
        expect(comments).to_contain_text("with-a-very-long-unbroken-word", timeout=10_000)
        assert_within_screen(page, comments)
        assert like.bounding_box()["y"] > screen["y"] + screen["height"] - 1
        assert comments.bounding_box()["y"] > like.bounding_box()["y"]
        box = page.get_by_role("textbox", name="Comment")
        send = page.get_by_role("button", name="Send")
        for control in (box, send):
            assert_within_screen(page, control, min_height=44)
        like.tap()
        expect(page.get_by_label("Like count")).to_have_text("1", timeout=10_000)
        box.tap()
        box.fill("from a phone")
        send.tap()
        expect(comments).to_contain_text("from a phone", timeout=10_000)
        assert page.evaluate(NO_SIDEWAYS_SCROLL)
    finally:
        context.close()


# -- accessibility -------------------------------------------------------------------------------------------


def test_no_page_has_a_serious_accessibility_violation(browser, start_worker, seeded, tokens, axe_source):
    started = time.monotonic()
    worker = start_worker(**FAST_PRESENCE)
    video = seeded["live"][0]
    comment_as(worker.url, tokens["bob"], video, "a comment, so the chat has one")
    found: dict[str, list[str]] = {}
    member, anonymous, phone = browser.new_context(), browser.new_context(), browser.new_context(**PHONE)
    try:
        page = anonymous.new_page()
        page.goto(f"{worker.url}/accounts/login/")
        found["login"] = serious_violations(page, axe_source)
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill("wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_be_visible()
        found["login, wrong password"] = serious_violations(page, axe_source)
        page.goto(f"{worker.url}/")
        expect(page.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
        found["home, signed out"] = serious_violations(page, axe_source)
        open_watch(page, worker.url, video)
        expect(page.get_by_role("list", name="Comments")).to_contain_text("a comment", timeout=10_000)
        found["watch, signed out"] = serious_violations(page, axe_source)

        page = sign_in(member, worker.url, "alice")
        expect(page.get_by_role("status", name="Connection")).to_have_text("counts live", timeout=10_000)
        found["home, signed in"] = serious_violations(page, axe_source)
        open_watch(page, worker.url, video)
        expect(page.get_by_role("list", name="Comments")).to_contain_text("a comment", timeout=10_000)
        expect(page.get_by_label("alice, online")).to_be_visible(timeout=10_000)
        page.get_by_role("button", name="Like").click()
        expect(page.get_by_label("Like count")).to_have_text("1", timeout=10_000)
        found["watch, signed in"] = serious_violations(page, axe_source)
        page.goto(f"{worker.url}/videos/{seeded['ended']['slug']}/")
        found["watch, ended video"] = serious_violations(page, axe_source)
        page.goto(f"{worker.url}/no-such-page/")
        found["404"] = serious_violations(page, axe_source)

        page = sign_in(phone, worker.url, "bob")
        open_watch(page, worker.url, video)
        expect(page.get_by_role("list", name="Comments")).to_contain_text("a comment", timeout=10_000)
        found["watch, phone"] = serious_violations(page, axe_source)
    finally:
        member.close()
        anonymous.close()
        phone.close()
    problems = {page: lines for page, lines in found.items() if lines}
    assert problems == {}, "\n".join(f"{page}:\n  " + "\n  ".join(lines) for page, lines in problems.items())
    print(f"axe-core {AXE_VERSION}: {len(found)} page states checked in {time.monotonic() - started:.1f} s")  # noqa: T201


def test_the_axe_check_finds_a_serious_violation_when_there_is_one(browser, start_worker, axe_source):
    """The control: the same check on the login page with its labels taken away and its text made unreadable."""
    worker = start_worker()
    page = browser.new_page()
    try:
        page.goto(f"{worker.url}/accounts/login/")
        page.evaluate(
            """() => {
                document.querySelectorAll('label').forEach((label) => label.remove());
                document.querySelector('.hint').style.color = '#181b22';
            }"""
        )
        ids = {line.split(" ", 1)[0] for line in serious_violations(page, axe_source)}
        assert {"label", "color-contrast"} <= ids, ids
    finally:
        page.close()
