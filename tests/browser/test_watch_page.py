"""The watch page: two members in two browsers (likes, comments, presence dots, moderation), then each of its
own behaviours (#15): the viewer count, the live chat, failures in words, pauses while reconnecting, an ended
video, reduced motion, the members panel."""

import json
import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.system.harness import Worker, base_env, run_django

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(120)]


def open_watch(page, base_url: str, video: dict) -> None:
    page.goto(f"{base_url}/videos/{video['slug']}/")
    expect(page.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)


def record_labels(page, name: str) -> None:
    """Keep every label the viewer item of `name` ever shows, so a flicker cannot go unseen."""
    page.evaluate(
        """(name) => {
            window.__labels = [];
            const item = [...document.querySelectorAll('#viewers li')].find(
                (li) => li.querySelector('.name').textContent === name);
            new MutationObserver(() => window.__labels.push(item.getAttribute('aria-label')))
                .observe(item, { attributes: true, attributeFilter: ['aria-label'] });
        }""",
        name,
    )


def test_two_members_see_each_others_likes_comments_and_presence(browser, start_worker, video):
    worker = start_worker(**FAST_PRESENCE)
    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        page_a = sign_in(context_a, worker.url, "alice")
        page_b = sign_in(context_b, worker.url, "bob")
        open_watch(page_b, worker.url, video)
        open_watch(page_a, worker.url, video)
        viewers_b = page_b.get_by_role("list", name="Viewers")
        expect(viewers_b.get_by_label("alice, online")).to_be_visible(timeout=10_000)

        like_count_b = page_b.get_by_label("Like count")
        before = int(like_count_b.inner_text())
        for _ in range(3):
            page_a.get_by_role("button", name="Like").click()
        expect(like_count_b).to_have_text(str(before + 3), timeout=10_000)
        expect(page_a.get_by_label("Like count")).to_have_text(str(before + 3))

        page_a.get_by_role("textbox", name="Comment").fill("hello from alice")
        page_a.get_by_role("button", name="Send").click()
        expect(page_b.get_by_role("list", name="Comments")).to_contain_text("hello from alice", timeout=10_000)

        # A short reload by alice (well inside the offline window) must not flip her dot.
        record_labels(page_b, "alice")
        page_a.reload()
        expect(page_a.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)
        page_b.wait_for_timeout(2_000)  # longer than the offline window: an absence can only be awaited
        assert "alice, offline" not in page_b.evaluate("window.__labels")
        expect(viewers_b.get_by_label("alice, online")).to_be_visible()

        # Closing the page takes alice off bob's panel: she no longer watches (the census's next report).
        page_a.close()
        expect(viewers_b.get_by_label("alice,")).to_have_count(0, timeout=5_000)
    finally:
        context_a.close()
        context_b.close()


def test_a_comment_hidden_in_the_admin_disappears_from_open_pages(browser, start_worker, video):
    worker = start_worker(**FAST_PRESENCE)
    context_b, context_admin = browser.new_context(), browser.new_context()
    try:
        page_b = sign_in(context_b, worker.url, "bob")
        open_watch(page_b, worker.url, video)
        page_b.get_by_role("textbox", name="Comment").fill("please hide me")
        page_b.get_by_role("button", name="Send").click()
        comments_b = page_b.get_by_role("list", name="Comments")
        expect(comments_b).to_contain_text("please hide me", timeout=10_000)

        admin = context_admin.new_page()
        admin.goto(f"{worker.url}/admin/login/?next=/admin/likes/comment/")
        admin.get_by_label("Username").fill("admin")
        admin.get_by_label("Password").fill("pw-admin")
        admin.get_by_role("button", name="Log in").click()
        admin.get_by_role("row").filter(has_text="please hide me").get_by_role("checkbox").check()
        admin.locator("select[name=action]").select_option("hide")
        admin.get_by_role("button", name="Go").click()
        expect(admin.locator(".messagelist")).to_be_visible()

        expect(comments_b).not_to_contain_text("please hide me", timeout=10_000)
    finally:
        context_b.close()
        context_admin.close()


def test_two_browsers_on_two_workers_share_likes_and_comments(browser, redis_server, start_worker, video):
    one = start_worker(redis_server.url, name="one", **FAST_PRESENCE)
    two = start_worker(redis_server.url, name="two", **FAST_PRESENCE)
    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        page_a = sign_in(context_a, one.url, "alice")
        page_b = sign_in(context_b, two.url, "bob")
        open_watch(page_a, one.url, video)
        open_watch(page_b, two.url, video)
        expect(page_b.get_by_role("list", name="Viewers").get_by_label("alice, online")).to_be_visible(timeout=10_000)
        like_count_b = page_b.get_by_label("Like count")
        before = int(like_count_b.inner_text())
        for _ in range(3):
            page_a.get_by_role("button", name="Like").click()
        expect(like_count_b).to_have_text(str(before + 3), timeout=10_000)
        page_a.get_by_role("textbox", name="Comment").fill("across workers")
        page_a.get_by_role("button", name="Send").click()
        expect(page_b.get_by_role("list", name="Comments")).to_contain_text("across workers", timeout=10_000)
        expect(page_b.get_by_label("Viewer count")).to_contain_text("2", timeout=10_000)
    finally:
        context_a.close()
        context_b.close()


def test_a_worker_killed_mid_stream_of_comments_costs_no_comment_and_no_refetch(
    browser, redis_server, start_worker, video, tokens
):
    holder = start_worker(redis_server.url, name="holder")
    other = start_worker(redis_server.url, name="other")
    again = None
    context = browser.new_context()
    try:
        page = sign_in(context, holder.url, "alice")
        loads: list[str] = []
        # Comment lists fetched: the comments' history must make a refetch needless (the viewer count, a topic
        # without history, is refetched after a reconnect by design: only a refetch can tell what it missed).
        page.on("request", lambda r: loads.append(r.url) if r.method == "GET" and "/comments" in r.url else None)
        open_watch(page, holder.url, video)
        # Every delivery the page's client hands to a handler, duplicates included.
        page.evaluate(
            """(topic) => {
                window.__seen = [];
                Realtime.connect().subscribe(topic, {"comment.created": (e) => window.__seen.push(e.data.text)});
            }""",
            f"video.{video['id']}.comments",
        )
        comments = page.get_by_role("list", name="Comments")

        def post(n: int) -> None:
            response = httpx.post(
                f"{other.url}/api/videos/{video['id']}/comments",
                json={"text": f"comment {n}"},
                headers={"Authorization": f"Token {tokens['bob']}"},
                timeout=10,
            )
            assert response.status_code == 201, response.text

        for n in range(1, 6):
            post(n)
        expect(comments).to_contain_text("comment 5", timeout=10_000)
        loads_before = len(loads)
        holder.kill()
        for n in range(6, 11):  # accepted while the page's worker is dead
            post(n)
        # The same address comes back (a supervisor restarting the worker): the page reconnects and resumes.
        again = Worker(holder.env, name="holder-again")
        again.port = holder.port
        again.start()
        for n in range(11, 13):
            post(n)
        # The page's reconnect back-off grew while the worker was down (its start took over 20 s on a loaded
        # machine): the next attempt may be that far off.
        expect(comments).to_contain_text("comment 12", timeout=45_000)
        expect(page.get_by_role("status", name="Connection")).to_have_text("live", timeout=10_000)
        seen = page.evaluate("window.__seen")
        assert seen == [f"comment {n}" for n in range(1, 13)]  # each once, in order
        shown = page.locator("#comments li .text").all_inner_texts()
        assert sorted(shown) == sorted(f"comment {n}" for n in range(1, 13))
        # The comments were not refetched: the stream replayed what the page missed.
        assert loads[loads_before:] == []
    finally:
        context.close()
        if again is not None:
            again.stop()


# -- the page's own behaviours (#15) ------------------------------------------------------------------------

# Texts a page element shows, from the first paint on: installed before any script of the page runs.
RECORD_TEXTS = """([selector, key]) => {
    window[key] = [];
    const start = () => {
        const element = document.querySelector(selector);
        if (!element) return;
        window[key].push(element.textContent);
        new MutationObserver(() => window[key].push(element.textContent))
            .observe(element, { childList: true, characterData: true, subtree: true });
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
    else start();
}"""
CANVAS_STILL = """async () => {
    const canvas = document.getElementById("standin");
    const before = canvas.toDataURL();
    await new Promise((resolve) => setTimeout(resolve, 400));
    return canvas.toDataURL() === before;
}"""
AT_BOTTOM = "(list) => list.scrollHeight - list.scrollTop - list.clientHeight < 2"


def make_video(site: dict, status: str = "live") -> dict:
    """A video owned by admin in the shared test database, live or already ended."""
    code = f"""
import json, uuid
from django.contrib.auth.models import User
from django.utils import timezone
from likes.models import LiveVideo
slug = "test-" + uuid.uuid4().hex[:8]
ended = {status == "ended"!r}
video = LiveVideo.objects.create(
    title="Browser test " + slug, slug=slug, owner=User.objects.get(username="admin"),
    status="ended" if ended else "live", ended_at=timezone.now() if ended else None,
)
print(json.dumps({{"id": video.pk, "slug": slug, "title": video.title}}))
"""
    return json.loads(run_django(base_env(site["tmp"]), code))


def end_video(site: dict, video: dict) -> None:
    run_django(
        base_env(site["tmp"]),
        f"from likes import services\nfrom likes.models import LiveVideo\n"
        f"services.end_videos(LiveVideo.objects.filter(pk={video['id']}))",
    )


def comment_as(base_url: str, token: str, video: dict, text: str) -> None:
    response = httpx.post(
        f"{base_url}/api/videos/{video['id']}/comments",
        json={"text": text},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text


def viewer_count_of(base_url: str, video: dict) -> int | None:
    return httpx.get(f"{base_url}/api/videos/{video['id']}", timeout=10).json()["viewer_count"]


def test_an_arriving_viewer_is_in_the_viewer_count_from_the_first_paint(browser, start_worker, site, video):
    # A census far slower than the page: what each page shows before the census counts it is the page's own.
    census_secs = 3
    worker = start_worker(**{**FAST_PRESENCE, "REALTIME_CENSUS_SECS": str(census_secs)})
    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        page_a = sign_in(context_a, worker.url, "alice")
        page_a.add_init_script(f"({RECORD_TEXTS})(['#viewer-count', '__viewers'])")
        open_watch(page_a, worker.url, video)
        # Alone, and not counted by the census yet: one viewer, never 0 and never unknown.
        expect(page_a.get_by_label("Viewer count")).to_have_text("1 watching")
        deadline = time.monotonic() + 3 * census_secs
        while viewer_count_of(worker.url, video) != 1:  # the census has counted alice
            assert time.monotonic() < deadline, "the census never counted the first viewer"
            time.sleep(0.1)

        page_b = sign_in(context_b, worker.url, "bob")
        page_b.add_init_script(f"({RECORD_TEXTS})(['#viewer-count', '__viewers'])")
        open_watch(page_b, worker.url, video)
        expect(page_a.get_by_label("Viewer count")).to_have_text("2 watching", timeout=3 * census_secs * 1000)
        page_b.wait_for_timeout((census_secs + 1.5) * 1000)  # past the page's own estimate: the census's count
        expect(page_b.get_by_label("Viewer count")).to_have_text("2 watching")
        # From its first paint bob's page counted bob: it never showed a count without him.
        assert set(page_b.evaluate("window.__viewers")) == {"2"}, page_b.evaluate("window.__viewers")

        page_b.close()
        expect(page_a.get_by_label("Viewer count")).to_have_text("1 watching", timeout=3 * census_secs * 1000)
        assert set(page_a.evaluate("window.__viewers")) == {"1", "2"}, page_a.evaluate("window.__viewers")
    finally:
        context_a.close()
        context_b.close()


def test_comments_read_like_a_live_chat(browser, start_worker, video, tokens):
    worker = start_worker(**FAST_PRESENCE)
    for n in range(1, 26):
        comment_as(worker.url, tokens["bob"], video, f"comment {n}")
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        comments = page.get_by_role("list", name="Comments")
        expect(comments.get_by_role("listitem")).to_have_count(25)
        # Oldest at the top, newest at the bottom, and the list opens at the newest.
        texts = page.locator("#comments li .text").all_inner_texts()
        assert texts == [f"comment {n}" for n in range(1, 26)]
        page.wait_for_function(f"({AT_BOTTOM})(document.getElementById('comments'))")
        # Each comment reads "author, time: text" (a screen reader no longer hears "bobcomment 1"), with the
        # time as a machine-readable <time>.
        first = comments.get_by_role("listitem").first
        assert re.fullmatch(r"bob, \d{1,2}:\d{2}( [AP]M)?: comment 1", first.text_content()), first.text_content()
        assert first.locator("time").get_attribute("datetime").startswith("20")

        # At the bottom, a new comment keeps the list at the bottom.
        comment_as(worker.url, tokens["bob"], video, "comment 26")
        expect(comments.get_by_role("listitem").last).to_contain_text("comment 26", timeout=10_000)
        page.wait_for_function(f"({AT_BOTTOM})(document.getElementById('comments'))")
        expect(page.get_by_role("button", name="New comment")).to_be_hidden()

        # Scrolled up to read: the list stays put, and a button says what arrived.
        comments.evaluate("(list) => { list.scrollTop = 0; }")
        comment_as(worker.url, tokens["bob"], video, "comment 27")
        jump = page.get_by_role("button", name="1 new comment")
        expect(jump).to_be_visible(timeout=10_000)
        assert comments.evaluate("(list) => list.scrollTop") == 0
        jump.click()
        page.wait_for_function(f"({AT_BOTTOM})(document.getElementById('comments'))")
        expect(jump).to_be_hidden()

        # One's own comment always brings the list to the bottom, where it shows.
        comments.evaluate("(list) => { list.scrollTop = 0; }")
        page.get_by_role("textbox", name="Comment").fill("mine, at the bottom")
        page.get_by_role("button", name="Send").click()
        expect(comments.get_by_role("listitem").last).to_contain_text("mine, at the bottom", timeout=10_000)
        page.wait_for_function(f"({AT_BOTTOM})(document.getElementById('comments'))")
        expect(page.get_by_role("textbox", name="Comment")).to_have_value("")
    finally:
        context.close()


def test_failures_are_said_in_the_servers_words(browser, start_worker, site, video):
    worker = start_worker(**{**FAST_PRESENCE, "REALTIME_RATE_LIMITS": "like=1/m,comment=0,connect=0,subscribe=0"})
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        like, send = page.get_by_role("button", name="Like"), page.get_by_role("button", name="Send")
        like_error = page.locator("#like-error")
        comment_box = page.get_by_role("textbox", name="Comment")

        # A validation error: the field's message, not "Invalid input: see 'errors'."
        comment_box.evaluate("(input) => input.removeAttribute('maxlength')")
        comment_box.fill("x" * 1001)
        send.click()
        expect(page.locator("#comment-error")).to_have_text("Ensure this field has no more than 1000 characters.")
        expect(comment_box).to_have_value("x" * 1001)  # kept, to be shortened

        # A rate limit: the server's detail, capitalised as a sentence.
        like.click()
        expect(page.get_by_label("Like count")).to_have_text("1", timeout=10_000)
        like.click()
        expect(like_error).to_have_text(re.compile(r"^Too many requests \(like: at most 1 per 60 s\); retry in \d+ s"))

        # No answer at all: says so, instead of "Failed to fetch".
        page.route("**/api/videos/*/comments", lambda route: route.abort("internetdisconnected"))
        comment_box.fill("into the void")
        send.click()
        expect(page.locator("#comment-error")).to_have_text(
            "Could not reach livesite: check your connection, then try again."
        )
        page.unroute("**/api/videos/*/comments")

        # The video ends while the page is open: the refusal says so and the page turns into an ended one.
        end_video(site, video)
        comment_box.fill("too late")
        send.click()
        expect(page.locator("#comment-error")).to_have_text("This video has ended: it takes no more likes or comments.")
        expect(page.locator("#badge")).to_have_text("ENDED")
        expect(page.get_by_text("Comments are closed: this live video has ended.")).to_be_visible()
        expect(comment_box).to_be_hidden()
        expect(like).to_be_disabled()
        expect(page.get_by_role("status", name="Connection")).to_be_hidden()
        assert page.evaluate(CANVAS_STILL)
    finally:
        context.close()


def test_actions_pause_while_reconnecting_and_resume_after(browser, start_worker, video):
    worker = start_worker(**FAST_PRESENCE)
    again = None
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        like, send = page.get_by_role("button", name="Like"), page.get_by_role("button", name="Send")
        expect(like).to_be_enabled()
        expect(send).to_be_enabled()
        page.get_by_role("textbox", name="Comment").fill("typed while offline")

        worker.kill()
        expect(page.get_by_role("status", name="Connection")).to_have_text("reconnecting…", timeout=10_000)
        expect(like).to_be_disabled()
        expect(send).to_be_disabled()
        expect(page.locator("#action-hint")).to_contain_text("Reconnecting")
        # What the viewer was typing stays, and can still be edited.
        expect(page.get_by_role("textbox", name="Comment")).to_be_editable()
        expect(page.get_by_role("textbox", name="Comment")).to_have_value("typed while offline")

        again = Worker(worker.env, name="worker-again")
        again.port = worker.port
        again.start()
        expect(page.get_by_role("status", name="Connection")).to_have_text("live", timeout=20_000)
        expect(like).to_be_enabled()
        expect(send).to_be_enabled()
        expect(page.locator("#action-hint")).to_have_text("")
        send.click()
        expect(page.get_by_role("list", name="Comments")).to_contain_text("typed while offline", timeout=10_000)
    finally:
        context.close()
        if again is not None:
            again.stop()


def test_an_ended_video_stands_still_and_says_why(browser, start_worker, site):
    worker = start_worker(**FAST_PRESENCE)
    ended = make_video(site, status="ended")
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        page.goto(f"{worker.url}/videos/{ended['slug']}/")
        expect(page.locator("#badge")).to_have_text("ENDED")
        expect(page.get_by_text("This live video has ended", exact=True)).to_be_visible()
        # No green "live" chip, no viewer count, no Like button, and the comment box gives its reason.
        expect(page.get_by_role("status", name="Connection")).to_be_hidden()
        expect(page.get_by_label("Viewer count")).to_be_hidden()
        expect(page.get_by_role("button", name="Like")).to_have_count(0)
        expect(page.get_by_role("textbox", name="Comment")).to_be_hidden()
        expect(page.get_by_text("Comments are closed: this live video has ended.")).to_be_visible()
        expect(page.locator("#action-hint")).to_have_text(
            "This live video has ended: it takes no more likes or comments."
        )
        assert page.evaluate(CANVAS_STILL)
    finally:
        context.close()


HEARTS_ADDED = """() => {
    window.__hearts = 0;
    new MutationObserver((changes) => { for (const c of changes) window.__hearts += c.addedNodes.length; })
        .observe(document.getElementById("hearts"), { childList: true });
}"""


@pytest.mark.parametrize("reduced", [True, False], ids=["reduced-motion", "motion"])
def test_reduced_motion_stops_the_hearts_and_the_animation(browser, start_worker, video, reduced):
    worker = start_worker(**FAST_PRESENCE)
    context = browser.new_context(reduced_motion="reduce" if reduced else "no-preference")
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        page.evaluate(HEARTS_ADDED)
        for n in range(1, 4):
            page.get_by_role("button", name="Like").click()
            expect(page.get_by_label("Like count")).to_have_text(str(n), timeout=10_000)
        page.wait_for_timeout(500)  # the last like's event (coalesced) has floated its hearts, if any
        if reduced:
            assert page.evaluate("window.__hearts") == 0
            assert page.evaluate(CANVAS_STILL)
        else:  # the control: the same page moves when motion is welcome
            assert page.evaluate("window.__hearts") > 0
            assert not page.evaluate(CANVAS_STILL)
    finally:
        context.close()


def test_the_viewers_panel_lists_who_watches_this_video_and_follows_them_coming_and_going(
    browser, start_worker, video, site
):
    worker = start_worker(**FAST_PRESENCE)
    other = make_video(site)
    context_a, context_b = browser.new_context(), browser.new_context()
    try:
        page_b = sign_in(context_b, worker.url, "bob")
        open_watch(page_b, worker.url, video)
        panel = page_b.get_by_role("list", name="Signed-in members watching now")
        # Alone: bob, from the first paint, with his own dot; alice is online elsewhere, not on this video.
        expect(panel.get_by_label("bob, online (you)")).to_be_visible(timeout=10_000)
        page_a = sign_in(context_a, worker.url, "alice")
        open_watch(page_a, worker.url, other)
        page_b.wait_for_timeout(1_500)  # three census intervals: an absence can only be awaited
        expect(panel.get_by_role("listitem")).to_have_count(1)

        # alice comes to this video: the census lists her on bob's page (name and dot), and bob on hers.
        open_watch(page_a, worker.url, video)
        expect(panel.get_by_label("alice, online")).to_be_visible(timeout=10_000)
        expect(panel.get_by_role("listitem")).to_have_count(2)
        panel_a = page_a.get_by_role("list", name="Signed-in members watching now")
        expect(panel_a.get_by_label("bob, online")).to_be_visible(timeout=10_000)
        expect(panel_a.get_by_label("alice, online (you)")).to_be_visible()

        # alice leaves for the other video: she goes from bob's panel while still online.
        open_watch(page_a, worker.url, other)
        expect(panel.get_by_label("alice,")).to_have_count(0, timeout=10_000)
        expect(panel.get_by_role("listitem")).to_have_count(1)
    finally:
        context_a.close()
        context_b.close()


def test_the_names_endpoint_answers_those_who_may_see_presence_and_refuses_bad_input_in_json(
    browser, start_worker, site
):
    worker = start_worker(**FAST_PRESENCE)
    alice_id, bob_id = site["members"]["alice"]["id"], site["members"]["bob"]["id"]
    anonymous = httpx.get(f"{worker.url}/api/members?ids={alice_id}", timeout=10)
    assert (anonymous.status_code, anonymous.json()["code"]) == (403, "not_allowed")
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "bob")
        answer = page.request.get(f"{worker.url}/api/members?ids={bob_id},{alice_id},{bob_id},999999999")
        assert answer.status == 200
        assert answer.json() == {"members": [{"id": bob_id, "name": "bob"}, {"id": alice_id, "name": "alice"}]}
        too_many = ",".join(map(str, range(1, 102)))
        for query, code in [
            ("", "invalid_ids"),
            ("1,x", "invalid_ids"),
            ("-1", "invalid_ids"),
            (too_many, "too_many_ids"),
        ]:
            response = page.request.get(f"{worker.url}/api/members?ids={query}")
            assert (response.status, response.json()["code"]) == (400, code), query
    finally:
        context.close()


def test_a_video_ended_in_the_admin_ends_open_pages_at_once(browser, redis_server, start_worker, site):
    worker = start_worker(redis_server.url, **FAST_PRESENCE)
    live = make_video(site)
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, live)
        assert not page.evaluate(CANVAS_STILL)
        # What the admin's "end" action calls: it publishes video.ended after commit.
        run_django(
            base_env(site["tmp"], REDIS_URL=redis_server.url),
            "from likes import services\nfrom likes.models import LiveVideo\n"
            f"print(services.end_videos(LiveVideo.objects.filter(pk={live['id']})))",
        )
        expect(page.get_by_text("This live video has ended", exact=True)).to_be_visible(timeout=10_000)
        expect(page.locator("#badge")).to_have_text("ENDED")
        expect(page.get_by_role("textbox", name="Comment")).to_be_hidden()
        expect(page.get_by_role("button", name="Like")).to_be_disabled()
        expect(page.get_by_text("Comments are closed: this live video has ended.")).to_be_visible()
        expect(page.locator("#action-hint")).to_have_text(
            "This live video has ended: it takes no more likes or comments."
        )
        expect(page.get_by_text("Nobody is watching: this live video has ended.")).to_be_visible()
        assert page.evaluate(CANVAS_STILL)
    finally:
        context.close()


def test_counts_and_comments_read_as_words_and_numbers_to_a_screen_reader(browser, start_worker, video):
    worker = start_worker(**FAST_PRESENCE)
    context = browser.new_context()
    try:
        page = sign_in(context, worker.url, "alice")
        open_watch(page, worker.url, video)
        page.get_by_role("button", name="Like").click()
        page.get_by_role("textbox", name="Comment").fill("hello there")
        page.get_by_role("button", name="Send").click()
        # What the accessibility tree holds: each count named once and read with its number (an aria-label
        # on a span used to replace the number), and a comment as "author, time: text".
        expect(page.locator(".count")).to_match_aria_snapshot('- paragraph:\n  - status "Like count": "1"')
        expect(page.locator(".overlay")).to_match_aria_snapshot(
            '- text: LIVE\n- status "Viewer count": 1 watching\n- status "Connection": live'
        )
        expect(page.get_by_role("list", name="Comments")).to_match_aria_snapshot(
            '- list "Comments":\n  - listitem:\n    - text: alice ,\n    - time: /\\d{1,2}:\\d{2}.*/\n'
            '    - text: ": hello there"',
            timeout=10_000,
        )
    finally:
        context.close()
