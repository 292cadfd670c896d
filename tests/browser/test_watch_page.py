"""Two members in two browsers on the watch page: likes, comments, presence dots, moderation."""

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.system.harness import Worker

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

        # Closing the page takes alice offline for bob within the window.
        page_a.close()
        expect(viewers_b.get_by_label("alice, offline")).to_be_visible(timeout=5_000)
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
        expect(comments).to_contain_text("comment 12", timeout=15_000)
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
