// Shared by the Node tests: the server under test (from tests/js/test_node.py), publishing, waiting, and a
// fetch that tests can take down, slow or make fail, in front of the real one.
import { randomBytes } from "node:crypto";

export const SERVER = process.env.REALTIME_TEST_URL || "";
export const MEMBERS = JSON.parse(process.env.REALTIME_TEST_MEMBERS || "{}");
export const needsServer = SERVER ? {} : { skip: "REALTIME_TEST_URL is not set (run through tests/js/test_node.py)" };

/** A fresh topic in a namespace the test deployment opens to API publishers. */
export function topic(name = "js") {
  return `t.${name}.${randomBytes(6).toString("hex")}`;
}

/** Publish through the HTTP API as the test admin; resolves when the server accepted it (202). */
export async function publish(topicName, type, data) {
  const response = await fetch(`${SERVER}/api/publish`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Token ${MEMBERS.admin.token}` },
    body: JSON.stringify({ topic: topicName, type, data }),
  });
  if (response.status !== 202) throw new Error(`publish: ${response.status} ${await response.text()}`);
}

/** Wait until `check()` is truthy (for state with no event to await); fails after `timeoutMs`. */
export async function until(check, timeoutMs = 5000, what = String(check)) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`);
    await sleep(10);
  }
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function jsonResponse(status, body, headers = {}) {
  return new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json", ...headers } });
}

/**
 * A fetch in front of the real one. `calls` records every request ({method, path, url, headers, body, at});
 * `down()` drops every open request and fails new ones until `up()`; `fault(match, respond)` answers the
 * next request that matches with `respond(call, init)` instead (a Response, a promise, or a thrown error).
 */
export function network() {
  const calls = [];
  const faults = [];
  const open = new Set();
  let isDown = false;

  async function fetchThrough(url, init = {}) {
    const method = init.method || "GET";
    const call = {
      method,
      path: new URL(url).pathname,
      url: String(url),
      headers: { ...(init.headers || {}) },
      body: init.body ? JSON.parse(init.body) : null,
      at: performance.now(),
    };
    calls.push(call);
    if (isDown) throw new TypeError("fetch failed (the test took the network down)");
    const index = faults.findIndex((fault) => fault.match(call));
    if (index >= 0) {
      const [fault] = faults.splice(index, 1);
      return fault.respond(call, init);
    }
    const controller = new AbortController();
    if (init.signal) {
      if (init.signal.aborted) controller.abort();
      init.signal.addEventListener("abort", () => controller.abort(), { once: true });
    }
    open.add(controller);
    return fetch(url, { ...init, signal: controller.signal });
  }

  return {
    fetch: fetchThrough,
    calls,
    count: (method, path) => calls.filter((call) => call.method === method && call.path === path).length,
    down() {
      isDown = true;
      for (const controller of open) controller.abort();
      open.clear();
    },
    up() {
      isDown = false;
    },
    fault(match, respond) {
      faults.push({ match, respond });
    },
  };
}

export const CONNECT = "/realtime/connect";
export const SUBSCRIPTIONS = "/realtime/subscriptions";
export const TICKETS = "/realtime/tickets";

/** A request that never answers until it is aborted (then fails as fetch does). */
export function hang(call, init) {
  return new Promise((_, reject) => {
    init.signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")), { once: true });
  });
}
