"""The realtime client (static/realtime/) in Chromium against a real worker: both builds, promises and states,
a refused topic, a fresh CSRF token, resume, and one stream shared by 8 tabs over plain HTTP/1.1."""

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.browser.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.system, pytest.mark.timeout(120)]

# A page of the worker's origin that only loads the client (Playwright serves it: the site has no such page).
PAGE_PATH = "/__realtime_client_test__/"
PAGE = """<!doctype html><meta charset="utf-8"><title>realtime client test</title>
<script src="/static/realtime/realtime.js"></script>
<script>
  window.rec = { states: [], events: {}, gaps: [], reconnects: 0 };
  window.start = (options, topics) => {
    const rt = (window.rt = Realtime.connect(options));
    rt.onState((state, reason) => rec.states.push(reason ? `${state}:${reason.code}` : state));
    rt.onReconnect(() => rec.reconnects++);
    for (const topic of topics || []) {
      rec.events[topic] = [];
      rt.subscribe(topic, { "t.n": (e) => rec.events[topic].push(e.data.n), gap: () => rec.gaps.push(topic) });
    }
  };
  const auto = new URLSearchParams(location.search).get("start"); // a tab that starts by itself
  if (auto) start(JSON.parse(auto), ["news.client.control"]);
</script>"""
MODULE_PAGE_PATH = "/__realtime_client_module_test__/"
MODULE_PAGE = """<!doctype html><meta charset="utf-8"><title>realtime module test</title>
<script type="module">
  import Realtime, { connect } from "/static/realtime/realtime.mjs";
  window.loaded = { same: Realtime === window.Realtime && connect === Realtime.connect, workerUrl: Realtime.workerUrl };
</script>"""
CONNECTED = "() => window.rt && rt.state === 'connected'"


@pytest.fixture
def context(browser) -> Iterator[object]:
    context = browser.new_context()
    context.route(f"**{PAGE_PATH}", lambda route: route.fulfill(status=200, content_type="text/html", body=PAGE))
    context.route(
        f"**{MODULE_PAGE_PATH}", lambda route: route.fulfill(status=200, content_type="text/html", body=MODULE_PAGE)
    )
    yield context
    context.close()


def open_page(context, base_url: str, options: dict | None = None, topics: list[str] = ()) -> object:
    page = context.new_page()
    page.goto(f"{base_url}{PAGE_PATH}")
    page.evaluate("([options, topics]) => start(options, topics)", [options or {}, list(topics)])
    return page


def new_topic() -> str:
    return f"news.client.{secrets.token_hex(6)}"


def publish(base_url: str, token: str, topic: str, n: int) -> None:
    response = httpx.post(
        f"{base_url}/api/publish",
        json={"topic": topic, "type": "t.n", "data": {"n": n}},
        headers={"Authorization": f"Token {token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def streams_open(base_url: str, token: str) -> int:
    response = httpx.get(f"{base_url}/realtime/stats", headers={"Authorization": f"Token {token}"}, timeout=10)
    return int(response.json()["connections"])


def wait_events(page, topic: str, expected: list[int]) -> None:
    page.wait_for_function("([topic, n]) => rec.events[topic].length >= n", arg=[topic, len(expected)], timeout=10_000)
    assert page.evaluate("(topic) => rec.events[topic]", topic) == expected


def test_the_script_and_the_module_load_as_one_client_and_share_a_stream(context, start_worker, tokens):
    worker = start_worker()
    topic = new_topic()
    script_page = open_page(context, worker.url, topics=[topic])
    script_page.wait_for_function(CONNECTED, timeout=10_000)
    assert script_page.evaluate("rt.sharing") == "worker"
    # The module in a page of its own: it finds the worker script by itself and joins the same stream.
    module_page = context.new_page()
    module_page.goto(f"{worker.url}{MODULE_PAGE_PATH}")
    module_page.wait_for_function("() => window.loaded", timeout=10_000)
    loaded = module_page.evaluate("window.loaded")
    assert loaded == {"same": True, "workerUrl": f"{worker.url}/static/realtime/realtime.js"}
    got = module_page.evaluate(
        """async (topic) => {
            const { connect } = await import("/static/realtime/realtime.mjs");
            const rt = (window.rt = connect());
            window.got = [];
            await rt.subscribe(topic, { "t.n": (e) => got.push(e.data.n) });
            return [rt.state, rt.sharing];
        }""",
        topic,
    )
    assert got == ["connected", "worker"]
    publish(worker.url, tokens["admin"], topic, 1)
    module_page.wait_for_function("() => got.length === 1", timeout=10_000)
    wait_events(script_page, topic, [1])
    assert streams_open(worker.url, tokens["admin"]) == 1


def test_a_refused_topic_rejects_its_promise_and_the_state_says_failed_until_it_is_dropped(
    context, start_worker, tokens
):
    worker = start_worker()
    topic = new_topic()
    page = open_page(context, worker.url)
    outcome = page.evaluate(
        """async (topic) => {
            rec.events[topic] = [];
            const fine = rt.subscribe(topic, { "t.n": (e) => rec.events[topic].push(e.data.n) });
            window.refused = rt.subscribe("member.999.inbox", {});
            const [ok, bad] = await Promise.allSettled([fine.ready, refused.ready]);
            return {
                ok: ok.status === "fulfilled" && ok.value.topic,
                bad: [bad.reason.name, bad.reason.code, bad.reason.status, bad.reason.topic],
                state: rt.state,
                reason: rt.reason.code,
            };
        }""",
        topic,
    )
    assert outcome == {
        "ok": topic,
        "bad": ["RealtimeError", "forbidden_topic", 403, "member.999.inbox"],
        "state": "failed",
        "reason": "forbidden_topic",
    }
    # Live on the topics it may read, and never claimed to be live while one was refused.
    publish(worker.url, tokens["admin"], topic, 1)
    wait_events(page, topic, [1])
    assert "connected" not in page.evaluate("rec.states")
    page.evaluate("refused()")
    assert page.evaluate("rt.state") == "connected"


def test_a_member_subscribes_with_the_csrf_token_of_now_not_of_page_load(context, start_worker, site):
    worker = start_worker()
    first = context.new_page()
    first.goto(f"{worker.url}/accounts/login/")  # sets a CSRF cookie, which signing in replaces
    page = open_page(context, worker.url)
    page.wait_for_function(CONNECTED, timeout=10_000)
    before = page.evaluate("document.cookie")
    sign_in(context, worker.url, "alice")
    assert page.evaluate("document.cookie") != before
    alice = site["members"]["alice"]["id"]
    inbox = f"member.{alice}.inbox"
    # The open stream is anonymous: a new one carries her session, and the POST her new CSRF token.
    page.evaluate("rt.reconnect()")
    result = page.evaluate(
        """async (inbox) => {
            const confirmed = await rt.subscribe(inbox, {}).ready.catch((e) => e.code);
            return [confirmed.topic || confirmed, rt.state, rt.memberId];
        }""",
        inbox,
    )
    assert result == [inbox, "connected", alice]


def test_a_dropped_stream_reconnects_and_resumes_every_missed_event_once(context, start_worker, tokens):
    worker = start_worker()
    topic = new_topic()
    page = open_page(context, worker.url, {"share": False, "maxRetryMs": 300}, [topic])
    page.wait_for_function(CONNECTED, timeout=10_000)
    publish(worker.url, tokens["admin"], topic, 1)
    wait_events(page, topic, [1])

    context.route("**/realtime/connect*", lambda route: route.abort())  # the network drops, and stays down
    page.evaluate("rt.reconnect()")
    page.wait_for_function("() => rec.states.at(-1) === 'reconnecting:network_error'", timeout=10_000)
    publish(worker.url, tokens["admin"], topic, 2)
    publish(worker.url, tokens["admin"], topic, 3)
    context.unroute("**/realtime/connect*")

    page.wait_for_function(CONNECTED, timeout=10_000)
    wait_events(page, topic, [1, 2, 3])
    assert page.evaluate("[rec.gaps, rec.reconnects]") == [[], 1]
    page.evaluate("rt.close()")
    states = page.evaluate("rec.states")
    assert states[:2] == ["connecting", "connected"]
    assert states[-2:] == ["connected", "closed"]
    assert {state.split(":")[0] for state in states[2:-2]} == {"reconnecting"}


@pytest.mark.parametrize("share", ["worker", "leader"])
def test_eight_tabs_share_one_stream_and_outlive_the_tab_that_opened_it(context, start_worker, tokens, share):
    worker = start_worker()
    topic = new_topic()
    options = {"share": True if share == "worker" else "leader"}
    pages = [open_page(context, worker.url, options, [topic]) for _ in range(8)]
    for page in pages:
        page.wait_for_function(CONNECTED, timeout=15_000)
    roles = [page.evaluate("rt.sharing") for page in pages]
    if share == "worker":
        assert roles == ["worker"] * 8
        first = pages[0]
    else:
        assert sorted(roles) == ["follower"] * 7 + ["leader"]
        first = pages[roles.index("leader")]
    assert streams_open(worker.url, tokens["admin"]) == 1
    publish(worker.url, tokens["admin"], topic, 1)
    for page in pages:
        wait_events(page, topic, [1])

    first.close()  # the tab that opened the stream (the leader: the next tab in the lock's queue takes over)
    rest = [page for page in pages if page is not first]
    for page in rest:
        page.wait_for_function(CONNECTED, timeout=15_000)
    if share == "leader":
        assert sorted(page.evaluate("rt.sharing") for page in rest) == ["follower"] * 6 + ["leader"]
    publish(worker.url, tokens["admin"], topic, 2)
    for page in rest:
        wait_events(page, topic, [1, 2])
    rest[0].wait_for_function(
        "([url, token]) => fetch(url, { headers: { Authorization: `Token ${token}` } })"
        ".then((r) => r.json()).then((stats) => stats.connections === 1)",
        arg=[f"{worker.url}/realtime/stats", tokens["admin"]],
        polling=200,
        timeout=10_000,
    )


def test_without_sharing_eight_tabs_exhaust_the_six_connections_of_http_1_1(context, start_worker):
    # The control for the test above: the same 8 tabs, each with its own stream, cannot all go live. (Past the
    # 6th, a tab does not even load its script: no connection is left for it.)
    worker = start_worker()
    pages = []
    for _ in range(8):
        page = context.new_page()
        page.goto(f"{worker.url}{PAGE_PATH}?start=%7B%22share%22%3Afalse%7D", wait_until="commit")
        pages.append(page)
    pages[0].wait_for_timeout(3_000)  # an absence can only be awaited
    states = [page.evaluate("() => Boolean(window.rt) && rt.state") for page in pages]
    assert states.count("connected") < 8, states
