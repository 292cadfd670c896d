"""Forged events against open watch pages (#13): each forgery by a holder of `realtime.publish_event` is refused
by the publish API, and the pages stay true and live whatever the API does still deliver to them. Then the
pages' own checks: events no publisher may send, malformed, reach them through their real stream, and each is
ignored.

How malformed events reach the page: the publish API refuses every topic the page reads, so those events are
published the way the site's own services publish, with `realtime.publishing.publish_many` in a Django process
sharing the workers' Redis (a buggy service, as far as the page can tell). They travel the real dispatch and
stream to the page's real handlers; nothing in the page is reached into. The test learns that the page has
handled them by subscribing its own handler to the same topics through the page's client (`Realtime.connect()`,
its public API): a topic's handlers run in the order they subscribed, and the page's came first.
"""

import json
import re
import time
import uuid

import httpx
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from tests.browser.conftest import FAST_PRESENCE, sign_in
from tests.browser.test_watch_page import open_watch
from tests.system.harness import base_env, run_django

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(120)]

# The stream's own frames (realtime.events.CONTROL_TYPES): the publish API refuses them on any topic.
CONTROL_TYPES = ("reset", "connected", "error", "gap", "revoked", "closing", "message", "open")
HUGE = 10**15

RECORD = """async ([topics, types]) => {
    const rt = Realtime.connect();
    window.__seen = window.__seen || [];
    const push = (event) => window.__seen.push({ id: event.id, topic: event.topic, type: event.type });
    const subscriptions = topics.map((topic) => rt.subscribe(topic, Object.fromEntries(types.map((t) => [t, push]))));
    // A client whose subscribe() is a promise says when the server confirmed; an older one does not.
    if (!subscriptions.every((subscription) => typeof subscription.then === "function")) return false;
    await Promise.all(subscriptions);
    return true;
}"""
ALL_SEEN = "(ids) => ids.every((id) => window.__seen.some((event) => event.id === id))"
RECORD_STATES = "() => { window.__states = []; Realtime.connect().onState((s) => window.__states.push(s)); }"

PUBLISH_AS_A_SERVICE = """
import json
from realtime.publishing import publish_many
print(json.dumps([event.id for event in publish_many(json.loads(%r))]))
"""


def publish_api(base_url: str, token: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/api/publish", json=body, headers={"Authorization": f"Token {token}"}, timeout=10)


def server_video(base_url: str, video: dict) -> dict:
    response = httpx.get(f"{base_url}/api/videos/{video['id']}", timeout=10)
    response.raise_for_status()
    return response.json()


def record(page, topics: list[str], types: list[str]) -> bool:
    """Record every event of `types` on `topics` that the page's client hands to its handlers; True once the
    server confirmed the subscriptions, False if the client cannot say."""
    return page.evaluate(RECORD, [topics, types])


def until_delivered(pages: list, publish_probe) -> None:
    """Publish probes until every page's recorder has one: their subscriptions are in place. For a client that
    cannot say when they are; bounded in count and time."""
    for _ in range(50):
        probe = publish_probe()
        try:
            for page in pages:
                page.wait_for_function(ALL_SEEN, arg=[probe], timeout=200)
        except PlaywrightTimeoutError:
            continue
        return
    raise AssertionError("the pages' subscriptions were not in place after 50 probes")


def wait_until_seen(page, ids: list[str], errors: list[str]) -> None:
    """Wait until the page's client has handed every event of `ids` to the recorder (so to the page before it)."""
    try:
        page.wait_for_function(ALL_SEEN, arg=ids, timeout=10_000)
    except PlaywrightTimeoutError:
        # A handler that throws stops the handlers after it for that event: the recorder never sees it.
        seen = {event["id"] for event in page.evaluate("window.__seen")}
        raise AssertionError(
            f"{len(set(ids) - seen)} events never reached the recorder; page errors: {errors}"
        ) from None


def watch_errors(page) -> list[str]:
    """Uncaught exceptions in the page from now on (a handler that throws on what it was sent)."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def watch_refetches(page, video: dict) -> list[str]:
    """The page's reads of the video from now on: a `gap` or a reconnect would show as one."""
    reads: list[str] = []
    path = f"/api/videos/{video['id']}"
    page.on("request", lambda r: reads.append(r.url) if r.method == "GET" and path in r.url else None)
    return reads


def assert_true_and_live(pages: list, base_url: str, video: dict) -> None:
    like_count = server_video(base_url, video)["like_count"]
    for page in pages:
        expect(page.get_by_label("Like count")).to_have_text(str(like_count))
        expect(page.get_by_role("list", name="Comments")).not_to_contain_text("forged")
        expect(page.get_by_label("Viewer count")).to_have_text(re.compile(r"^\s*(\d{1,2}|\u2013) watching\s*$"))
        expect(page.get_by_role("status", name="Connection")).to_have_text("live")
        assert page.evaluate("window.__states") == ["connected"]  # never dropped, never reconnected


def test_every_forgery_through_the_publish_api_is_refused_and_open_pages_stay_true_and_live(
    browser, redis_server, start_worker, video, tokens, site
):
    one = start_worker(redis_server.url, name="one", **FAST_PRESENCE)
    two = start_worker(redis_server.url, name="two", **FAST_PRESENCE)
    alice_id, bob_id, admin_id = (site["members"][name]["id"] for name in ("alice", "bob", "admin"))
    vid = video["id"]
    context_alice, context_anonymous = browser.new_context(), browser.new_context()
    try:
        alice = sign_in(context_alice, one.url, "alice")
        anonymous = context_anonymous.new_page()
        pages = [alice, anonymous]
        open_watch(alice, one.url, video)
        open_watch(anonymous, two.url, video)
        # Presence is shown to signed-in members: alice's own panel is where a forged dot would show.
        viewers = alice.get_by_role("list", name="Viewers")
        expect(viewers.get_by_label("alice, online")).to_be_visible(timeout=10_000)

        # An open topic both pages read: what the API may still publish reaches them there.
        open_topic = f"hostile.forgery-{uuid.uuid4().hex[:8]}"
        types = ["like.created", "comment.created", "presence.changed", "probe.ready", "probe.done"]
        confirmed = [record(page, [open_topic], types) for page in pages]  # on every page: no short cut
        if not all(confirmed):

            def probe() -> str:
                response = publish_api(
                    one.url, tokens["admin"], {"topic": open_topic, "type": "probe.ready", "data": {}}
                )
                return response.json()["ids"][0]

            until_delivered(pages, probe)
        refetches, errors = [], []
        for page in pages:
            page.evaluate(RECORD_STATES)
            refetches.append(watch_refetches(page, video))
            errors.append(watch_errors(page))

        forged_comment = {
            "id": 10**9,
            "video": vid,
            "member": {"id": alice_id, "name": "Alice"},
            "text": "forged: alice never wrote this",
            "created": "2026-01-01T00:00:00Z",
            "hidden": False,
        }
        forgeries = [
            (f"video.{vid}.likes", "like.created", {"video": vid, "count": HUGE, "covered": 1, "by": []}),
            (f"video.{vid}.comments", "comment.created", forged_comment),
            (f"video.{vid}.comments", "comment.hidden", {"id": 1, "video": vid}),
            (
                f"presence.member.{alice_id}",
                "presence.changed",
                {"member": alice_id, "status": "offline", "last_seen": 9e18, "changed_at": 9e18},
            ),
            (f"census.video.{vid}.likes", "census.changed", {"topic": f"video.{vid}.likes", "count": HUGE}),
            (f"census.members.video.{vid}.likes", "census.changed", {"topic": f"video.{vid}.likes", "members": [1]}),
            (f"member.{alice_id}.inbox", "message.created", {"text": "forged: from the site"}),
            (f"member.{admin_id}.inbox", "note", {"text": "not even to the publisher's own inbox"}),
            ("secret.undeclared", "note", {"text": "nobody declares this namespace"}),
        ]
        refused = [(topic, kind, data, "not_publishable") for topic, kind, data in forgeries]
        control_topics = [
            open_topic,
            f"video.{vid}.likes",
            f"video.{vid}.comments",
            f"census.video.{vid}.likes",
            f"census.members.video.{vid}.likes",
            f"presence.member.{alice_id}",
            f"presence.member.{bob_id}",
            f"member.{alice_id}.inbox",
        ]
        refused += [(topic, kind, {}, "reserved_type") for topic in control_topics for kind in CONTROL_TYPES]
        for topic, kind, data, code in refused:
            response = publish_api(one.url, tokens["admin"], {"topic": topic, "type": kind, "data": data})
            assert (response.status_code, response.json().get("code")) == (403, code), (topic, kind, response.text)
        # A batch is all or nothing: its allowed half is not published either.
        batch = [
            {"topic": open_topic, "type": "like.created", "data": {"count": 1}},
            {"topic": f"video.{vid}.likes", "type": "like.created", "data": {"count": HUGE}},
        ]
        response = publish_api(one.url, tokens["admin"], {"events": batch})
        assert (response.status_code, response.json().get("code")) == (403, "not_publishable"), response.text

        # What the API does accept, on a topic the pages read: look-alikes of the page's own events.
        look_alikes = [
            ("like.created", {"video": vid, "count": HUGE, "covered": 1}),
            ("comment.created", forged_comment),
            ("presence.changed", {"member": alice_id, "status": "offline", "changed_at": 9e18}),
            ("probe.done", {}),
        ]
        ids = []
        for kind, data in look_alikes:
            response = publish_api(one.url, tokens["admin"], {"topic": open_topic, "type": kind, "data": data})
            assert response.status_code == 202, response.text
            ids += response.json()["ids"]
        for page, page_errors in zip(pages, errors, strict=True):
            wait_until_seen(page, ids, page_errors)
            # In order, each once, and nothing of the refused batch before them (probes aside).
            seen = page.evaluate("window.__seen")
            assert [e["id"] for e in seen if e["topic"] == open_topic and e["type"] != "probe.ready"] == ids

        assert_true_and_live(pages, one.url, video)
        expect(viewers.get_by_label("alice, online")).to_be_visible()
        assert refetches == [[], []]  # no gap, no reconnect: nothing was refetched
        assert errors == [[], []]

        # Still live: a real like and a real comment reach both pages.
        before = server_video(one.url, video)["like_count"]
        alice.get_by_role("button", name="Like").click()
        alice.get_by_role("textbox", name="Comment").fill("real, after the forgeries")
        alice.get_by_role("button", name="Send").click()
        for page in pages:
            expect(page.get_by_label("Like count")).to_have_text(str(before + 1), timeout=10_000)
            expect(page.get_by_role("list", name="Comments")).to_contain_text("real, after the forgeries")
        assert server_video(one.url, video)["like_count"] == before + 1
    finally:
        context_alice.close()
        context_anonymous.close()


def test_malformed_events_on_the_pages_own_topics_are_ignored_and_real_ones_still_apply(
    browser, redis_server, start_worker, video, site
):
    worker = start_worker(redis_server.url, **FAST_PRESENCE)
    alice_id, bob_id = site["members"]["alice"]["id"], site["members"]["bob"]["id"]
    vid = video["id"]
    contexts = [browser.new_context() for _ in range(3)]
    try:
        alice = sign_in(contexts[0], worker.url, "alice")
        bob = sign_in(contexts[1], worker.url, "bob")  # watches alice's dot (presence is for members)
        anonymous = contexts[2].new_page()
        warnings: list[str] = []
        bob.on("console", lambda m: warnings.append(m.text) if m.text.startswith("watch: ignored") else None)
        pages = [alice, bob, anonymous]
        for page in pages:
            open_watch(page, worker.url, video)
        viewers = bob.get_by_role("list", name="Viewers")
        expect(viewers.get_by_label("alice, online")).to_be_visible(timeout=10_000)
        expect(viewers.get_by_label("bob, online")).to_be_visible(timeout=10_000)
        for _ in range(2):
            alice.get_by_role("button", name="Like").click()
        alice.get_by_role("textbox", name="Comment").fill("a real comment")
        alice.get_by_role("button", name="Send").click()
        likes = 2
        for page in pages:
            expect(page.get_by_label("Like count")).to_have_text(str(likes), timeout=10_000)
            expect(page.get_by_role("list", name="Comments")).to_contain_text("a real comment", timeout=10_000)
        real_id = int(anonymous.locator("#comments li").first.get_attribute("data-comment"))

        likes_topic, comments_topic = f"video.{vid}.likes", f"video.{vid}.comments"
        census_topic, alice_topic = f"census.video.{vid}.likes", f"presence.member.{alice_id}"
        # Signed in, the page reads the census with who is watching (census.members.*, members only).
        members_topic = f"census.members.video.{vid}.likes"
        video_topics = [likes_topic, comments_topic]
        types = [
            "like.created",
            "comment.created",
            "comment.hidden",
            "comment.unhidden",
            "census.changed",
            "presence.changed",
        ]
        errors = []
        for page in pages:  # topics the page reads already: no subscription request
            mine = [census_topic] if page is anonymous else [members_topic, alice_topic]
            record(page, [*video_topics, *mine], types)
            page.evaluate(RECORD_STATES)
            errors.append(watch_errors(page))

        member = {"id": alice_id, "name": "alice"}
        now = time.time()
        malformed = [
            # Counts: not a non-negative safe integer, or a `covered` that is not a positive one.
            *(
                (likes_topic, "like.created", {"count": count, "covered": 1})
                for count in (-5, 7.5, "999999", 2**60, 1e300, None)
            ),
            (likes_topic, "like.created", {"count": likes + 1, "covered": "lots"}),
            (likes_topic, "like.created", {"count": likes + 1, "covered": 0}),
            (likes_topic, "like.created", {"covered": 3}),
            (likes_topic, "like.created", "like"),
            # Comments: an id that is not a positive integer, text that is not text, no member name.
            (comments_topic, "comment.created", {"id": "x1", "text": "forged 1", "member": member}),
            (comments_topic, "comment.created", {"id": 1.5, "text": "forged 2", "member": member}),
            (comments_topic, "comment.created", {"id": -3, "text": "forged 3", "member": member}),
            (comments_topic, "comment.created", {"id": 10**8 + 4, "text": 12345, "member": member}),
            (comments_topic, "comment.created", {"id": 10**8 + 5, "text": "forged 5"}),
            (comments_topic, "comment.created", {"id": 10**8 + 6, "text": "forged 6", "member": {"name": 7}}),
            (comments_topic, "comment.created", {"id": 10**8 + 7, "text": "forged 7", "member": "alice"}),
            (comments_topic, "comment.created", {"id": 10**8 + 8, "text": "forged 8", "member": {"name": " "}}),
            (comments_topic, "comment.unhidden", {"id": "x9", "text": "forged 9", "member": member}),
            (comments_topic, "comment.hidden", {"id": str(real_id)}),
            (comments_topic, "comment.hidden", {"id": f'{real_id}"], li, [data-comment="'}),
            # Viewer counts.
            *((members_topic, "census.changed", {"topic": likes_topic, "count": count}) for count in (-1, "9", 2**60)),
            # Presence: stamps from the future (a dot pinned for good), another member, unknown statuses.
            (alice_topic, "presence.changed", {"member": alice_id, "status": "offline", "changed_at": now + 3600}),
            (alice_topic, "presence.changed", {"member": alice_id, "status": "online", "changed_at": 9e18}),
            (alice_topic, "presence.changed", {"member": bob_id, "status": "offline", "changed_at": now}),
            (alice_topic, "presence.changed", {"member": str(alice_id), "status": "offline", "changed_at": now}),
            (alice_topic, "presence.changed", {"member": alice_id, "status": "away", "changed_at": now}),
            (alice_topic, "presence.changed", {"member": alice_id, "status": "offline", "changed_at": "now"}),
            (alice_topic, "presence.changed", {"member": alice_id, "status": "offline"}),
            (alice_topic, "presence.changed", "offline"),
        ]
        # Well formed but far above the count shown: checked with the server, never shown.
        absurd = [
            (likes_topic, "like.created", {"count": HUGE, "covered": 1}),
            (likes_topic, "like.created", {"count": HUGE, "covered": HUGE}),
        ]
        events = malformed + absurd
        env = base_env(site["tmp"], REDIS_URL=redis_server.url)
        ids = json.loads(run_django(env, PUBLISH_AS_A_SERVICE % json.dumps(events)))
        for page, page_errors in zip(pages, errors, strict=True):
            wanted = [
                i
                for i, (topic, _, _) in zip(ids, events, strict=True)
                if page is not anonymous or topic not in (alice_topic, members_topic)
            ]
            wait_until_seen(page, wanted, page_errors)
        assert errors == [[], [], []]

        assert_true_and_live(pages, worker.url, video)
        expect(anonymous.get_by_label("Like count")).to_have_text(str(likes))
        expect(anonymous.get_by_role("list", name="Comments")).to_contain_text("a real comment")
        expect(viewers.get_by_label("alice, online")).to_be_visible()
        expect(viewers.get_by_label("bob, online")).to_be_visible()
        # Each malformed event was refused by a check (and said so), not merely harmless.
        assert len(warnings) == len(malformed), warnings

        # Real changes still apply: a like, a comment, and alice leaving (no stamp from the future holds her dot).
        alice.get_by_role("button", name="Like").click()
        alice.get_by_role("textbox", name="Comment").fill("real, after the malformed ones")
        alice.get_by_role("button", name="Send").click()
        for page in (bob, anonymous):
            expect(page.get_by_label("Like count")).to_have_text(str(likes + 1), timeout=10_000)
            expect(page.get_by_role("list", name="Comments")).to_contain_text("real, after the malformed ones")
        alice.close()
        expect(viewers.get_by_label("alice,")).to_have_count(0, timeout=5_000)  # she no longer watches
    finally:
        for context in contexts:
            context.close()
