// The client against a real Daphne worker (started by tests/js/test_node.py): promises, states, retries,
// resume, tokens. `share: false`: Node has no tabs to share with (the browser tests cover sharing).
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import { Client, RealtimeError } from "../../static/realtime/realtime.mjs";
import {
  CONNECT,
  MEMBERS,
  SERVER,
  SUBSCRIPTIONS,
  TICKETS,
  hang,
  jsonResponse,
  needsServer,
  network,
  publish,
  sleep,
  topic,
  until,
} from "./helpers.mjs";

const clients = [];
function client(options = {}) {
  const made = new Client({ baseUrl: SERVER, share: false, maxRetryMs: 100, ...options });
  clients.push(made);
  return made;
}
afterEach(() => {
  for (const made of clients.splice(0)) made.close();
});

function recordStates(rt) {
  const states = [];
  rt.onState((state, reason) => states.push([state, reason && reason.code]));
  return states;
}

describe("subscriptions", needsServer, () => {
  test("subscribe() resolves when the server confirmed; events arrive once, in order", async () => {
    const rt = client();
    const name = topic();
    const got = [];
    const subscription = rt.subscribe(name, { "t.n": (event) => got.push(event) });
    assert.equal(typeof subscription, "function");
    const confirmed = await subscription;
    assert.equal(confirmed.topic, name);
    assert.match(confirmed.position, /:0$/); // subscribed before its first event
    assert.equal(rt.state, "connected");
    await publish(name, "t.n", { n: 1 });
    await publish(name, "t.n", { n: 2 });
    await until(() => got.length === 2);
    assert.deepEqual(
      got.map((event) => event.data.n),
      [1, 2],
    );
    assert.equal(got[1].offset, got[0].offset + 1);
    assert.deepEqual(Object.keys(got[0]).sort(), ["data", "epoch", "id", "offset", "published_at", "topic", "type"]);
  });

  test("a forbidden topic rejects with the server's error; the state is failed, never connected", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const states = recordStates(rt);
    const fine = rt.subscribe(topic(), {});
    const errors = [];
    const refused = rt.subscribe("member.999.inbox", { error: (error) => errors.push(error.code) });
    // `.ready`: assert.rejects (like any API that takes "a promise or a function") would call the function.
    await assert.rejects(refused.ready, (error) => {
      assert.ok(error instanceof RealtimeError);
      assert.equal(error.code, "forbidden_topic");
      assert.equal(error.status, 403);
      assert.equal(error.topic, "member.999.inbox");
      assert.match(error.detail, /member/);
      return true;
    });
    await fine; // the other topic of the same (split) request is subscribed
    assert.equal(rt.state, "failed");
    assert.equal(rt.reason.code, "forbidden_topic");
    assert.deepEqual(errors, ["forbidden_topic"]);
    assert.ok(!states.some(([state]) => state === "connected"), JSON.stringify(states));
    await sleep(300); // a refusal is not retried (retries here would come within 100 ms)
    const tries = net.calls.filter(
      (call) => call.body && call.body.topics && call.body.topics.includes("member.999.inbox"),
    );
    assert.equal(tries.length, 2); // the batch, then alone to tell which topic was refused
    refused(); // the page lets it go: everything it still holds is live
    assert.equal(rt.state, "connected");
  });

  test("an invalid topic is refused with 400 and the server's field errors", async () => {
    const rt = client();
    await assert.rejects(
      rt.subscribe("Not A Topic", {}).ready,
      (error) => error.status === 400 && error.code === "invalid",
    );
    assert.equal(rt.state, "failed");
  });

  test("503 and network failures are retried with backoff until confirmed; connected only then", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const states = recordStates(rt);
    const isPost = (call) => call.method === "POST" && call.path === SUBSCRIPTIONS;
    net.fault(isPost, () =>
      jsonResponse(503, { code: "realtime_unavailable", detail: "retry shortly" }, { "Retry-After": "0" }),
    );
    net.fault(isPost, () => {
      throw new TypeError("fetch failed");
    });
    let resolved = false;
    let atNetworkError = null; // what was true when the client said "network_error", read at that moment
    rt.onState((state, reason) => {
      if (reason && reason.code === "network_error") atNetworkError = { resolved, state };
    });
    const subscription = rt.subscribe(topic(), {});
    subscription.then(() => {
      resolved = true;
    });
    await subscription;
    assert.deepEqual(atNetworkError, { resolved: false, state: "connecting" });
    assert.equal(net.count("POST", SUBSCRIPTIONS), 3);
    assert.deepEqual(
      states.map(([state, code]) => `${state}:${code}`),
      ["connecting:null", "connecting:realtime_unavailable", "connecting:network_error", "connected:null"],
    );
  });

  test("a subscription request that never answers times out and is retried", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch, requestTimeoutMs: 300 });
    net.fault((call) => call.method === "POST" && call.path === SUBSCRIPTIONS, hang);
    await rt.subscribe(topic(), {});
    assert.equal(net.count("POST", SUBSCRIPTIONS), 2);
    assert.equal(rt.state, "connected");
  });

  test("an unknown connection (the stream is gone) opens a new stream, which subscribes again", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    net.fault(
      (call) => call.method === "POST" && call.path === SUBSCRIPTIONS,
      () => jsonResponse(404, { code: "unknown_connection", detail: "open /realtime/connect again" }),
    );
    const name = topic();
    const got = [];
    await rt.subscribe(name, { "t.n": (event) => got.push(event.data.n) });
    assert.equal(net.count("GET", CONNECT), 2);
    await publish(name, "t.n", { n: 1 });
    await until(() => got.length === 1);
  });

  test("two subscriptions to a topic share one on the server; the last one to go unsubscribes it", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const name = topic();
    const a = [];
    const b = [];
    const first = rt.subscribe(name, { "t.n": (event) => a.push(event.data.n) });
    const second = rt.subscribe(name, { "t.n": (event) => b.push(event.data.n) });
    await Promise.all([first, second]);
    await publish(name, "t.n", { n: 1 });
    await until(() => a.length === 1 && b.length === 1);
    first();
    await publish(name, "t.n", { n: 2 });
    await until(() => b.length === 2);
    assert.deepEqual(a, [1]);
    assert.equal(net.count("DELETE", SUBSCRIPTIONS), 0);
    second.unsubscribe();
    await until(() => net.count("DELETE", SUBSCRIPTIONS) === 1);
    const removal = net.calls.find((call) => call.method === "DELETE");
    assert.deepEqual(removal.body.topics, [name]);
    assert.equal(net.count("POST", SUBSCRIPTIONS), 1);
  });

  test("onReady runs once every subscription is confirmed; a later one does not take the state back", async () => {
    const rt = client();
    const ready = [];
    rt.onReady(() => ready.push(rt.state));
    const states = recordStates(rt);
    await Promise.all([rt.subscribe(topic(), {}), rt.subscribe(topic(), {})]);
    assert.deepEqual(ready, ["connected"]);
    await rt.subscribe(topic(), {});
    assert.deepEqual(
      states.map(([state]) => state),
      ["connecting", "connected"],
    );
  });

  test("close(): the state is closed and unconfirmed subscriptions reject", async () => {
    const rt = client();
    const pending = rt.subscribe(topic(), {});
    rt.close();
    assert.equal(rt.state, "closed");
    await assert.rejects(pending.ready, (error) => error.code === "closed");
    await assert.rejects(rt.subscribe(topic(), {}).ready, (error) => error.code === "closed");
  });
});

describe("reconnects", needsServer, () => {
  test("events published while the network is down arrive after it returns: once, in order, no gap", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const name = topic();
    const got = [];
    let gaps = 0;
    let reconnects = 0;
    rt.onReconnect(() => reconnects++);
    await rt.subscribe(name, { "t.n": (event) => got.push(event.data.n), gap: () => gaps++ });
    await publish(name, "t.n", { n: 1 });
    await until(() => got.length === 1);
    net.down();
    await until(() => rt.state === "reconnecting");
    await publish(name, "t.n", { n: 2 });
    await publish(name, "t.n", { n: 3 });
    net.up();
    await until(() => got.length === 3 && rt.state === "connected");
    await publish(name, "t.n", { n: 4 });
    await until(() => got.length === 4);
    assert.deepEqual(got, [1, 2, 3, 4]);
    assert.equal(gaps, 0);
    assert.equal(reconnects, 1);
    const resubscribe = net.calls.filter((call) => call.method === "POST" && call.path === SUBSCRIPTIONS).at(-1);
    assert.match(resubscribe.body.since[name], /:1$/); // where it stood: after the first event
  });

  test("a topic with no event yet resumes from where it was subscribed (position ':0')", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const name = topic();
    const got = [];
    const confirmed = await rt.subscribe(name, { "t.n": (event) => got.push(event.data.n) });
    assert.equal(confirmed.position, ":0");
    net.down();
    await until(() => rt.state === "reconnecting");
    await publish(name, "t.n", { n: 1 });
    net.up();
    await until(() => got.length === 1 && rt.state === "connected");
    const resubscribe = net.calls.filter((call) => call.method === "POST" && call.path === SUBSCRIPTIONS).at(-1);
    assert.deepEqual(resubscribe.body.since, { [name]: ":0" });
  });

  test("a resume the history cannot give calls the topic's gap handler, and events keep coming", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch });
    const name = topic();
    const got = [];
    const gaps = [];
    await rt.subscribe(name, { "t.n": (event) => got.push(event.data.n), gap: (notice) => gaps.push(notice.topic) });
    await publish(name, "t.n", { n: 1 });
    await until(() => got.length === 1);
    // The resubscription names an epoch the server never had (as after Redis lost the topic's history).
    net.fault(
      (call) => call.method === "POST" && call.body && call.body.since,
      (call, init) => {
        const body = { ...call.body, since: { [name]: "lostepoch:1" } };
        return fetch(call.url, { ...init, body: JSON.stringify(body) });
      },
    );
    rt.reconnect();
    await until(() => gaps.length === 1 && rt.state === "connected");
    assert.deepEqual(gaps, [name]);
    await publish(name, "t.n", { n: 2 });
    await until(() => got.length === 2);
  });

  test("backoff: the server's retry: is the base, doubled per failed attempt, capped (full jitter)", async () => {
    const net = network();
    // random() = 0.05: each wait is 5 % of its ceiling. The client's own base (10 s) would give 500 ms.
    const rt = client({ fetch: net.fetch, random: () => 0.05, retryMs: 10000, maxRetryMs: 8000 });
    await rt.subscribe(topic(), {});
    const droppedAt = performance.now();
    net.down();
    await until(() => net.count("GET", CONNECT) >= 5, 4000);
    net.up();
    await until(() => rt.state === "connected", 4000);
    const starts = net.calls.filter((call) => call.path === CONNECT).map((call) => call.at);
    const waits = [starts[1] - droppedAt, starts[2] - starts[1], starts[3] - starts[2], starts[4] - starts[3]];
    // 0.05 x min(8000, 2000 (the server's retry:) x 2^attempt): 100, 200, 400, then capped at 400 ms.
    [100, 200, 400, 400].forEach((expected, i) => {
      assert.ok(waits[i] >= expected - 5 && waits[i] < expected + 150, `${waits.map(Math.round)}`);
    });
  });
});

describe("tokens", needsServer, () => {
  test("a token client takes a ticket for each stream and sends the token only in headers", async () => {
    const net = network();
    const alice = MEMBERS.alice;
    const rt = client({ fetch: net.fetch, token: async () => alice.token });
    // Only alice may read her inbox: confirmed means the stream is hers.
    await rt.subscribe(`member.${alice.id}.inbox`, {});
    assert.equal(rt.memberId, alice.id);
    const first = net.calls.find((call) => call.path === CONNECT);
    assert.match(first.url, /[?&]ticket=[\w-]{20,}/);
    assert.ok(!first.url.includes(alice.token));
    for (const call of net.calls.filter((each) => each.method === "POST")) {
      assert.equal(call.headers.Authorization, `Token ${alice.token}`);
      assert.equal(call.headers["X-CSRFToken"], undefined);
    }
    rt.reconnect();
    await until(() => rt.state === "connected" && net.count("GET", CONNECT) === 2);
    assert.equal(net.count("POST", TICKETS), 2);
  });

  test("a bad token fails with the server's reason and stops trying", async () => {
    const net = network();
    const rt = client({ fetch: net.fetch, token: "not-a-token" });
    const subscription = rt.subscribe(topic(), {});
    await assert.rejects(subscription.ready, (error) => error.status === 401 && error.code === "invalid_token");
    assert.equal(rt.state, "failed");
    assert.equal(rt.reason.code, "invalid_token");
    await assert.rejects(rt.subscribe(topic(), {}).ready, (error) => error.code === "invalid_token");
    await sleep(300);
    assert.equal(net.count("POST", TICKETS), 1);
    assert.equal(net.count("GET", CONNECT), 0);
  });
});

describe("Realtime.connect", needsServer, () => {
  test("one client per page: the same one again, other options refused", async () => {
    const { default: Realtime } = await import("../../static/realtime/realtime.mjs");
    const options = { baseUrl: SERVER, share: false };
    const rt = Realtime.connect(options);
    clients.push(rt);
    assert.equal(Realtime.connect(), rt);
    assert.equal(Realtime.connect({ ...options }), rt);
    assert.throws(() => Realtime.connect({ baseUrl: SERVER, share: false, maxRetryMs: 5 }), /other options/);
    rt.close();
    assert.notEqual(Realtime.connect(options), rt);
    clients.push(Realtime.connect());
  });
});

describe("misuse", () => {
  test("outside a browser, a client without baseUrl is refused at once", () => {
    assert.throws(() => new Client({ share: false }), /not absolute: pass baseUrl/);
  });
});
