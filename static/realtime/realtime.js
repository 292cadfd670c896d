/*
 * @livesite/realtime: the browser (and Node) client of livesite's real-time layer. ONE Server-Sent Events stream
 * per browser, shared by every tab of the origin; topic subscriptions over HTTP that resolve or reject; resume
 * with positions after every reconnect. Plain script and the package's single source: `<script src>` defines
 * `window.Realtime`; `realtime.mjs` imports this file and re-exports it; in a SharedWorker it is the hub that
 * holds the shared stream. README.md in this folder is the manual.
 *
 *   const rt = Realtime.connect();                          // the page's client (one per page)
 *   const sub = rt.subscribe("video.1.likes", {             // event type -> handler
 *     "like.created": (event) => show(event.data.count),    // {id, topic, type, data, published_at, epoch, offset}
 *     gap: () => loadState(),                               // this topic's missed events are lost: refetch it
 *     error: (error) => say(error.detail),                  // refused, or taken away later (error.code)
 *   });
 *   await sub;                                              // resolved when the server confirmed, else rejected
 *   rt.onState((state, reason) => ...);                     // connecting|connected|reconnecting|failed|closed
 *   rt.onReady(loadState);                                  // connected and every subscription confirmed
 *   sub();                                                  // unsubscribe (sub.unsubscribe() too)
 *
 * How it stays correct: the stream is opened with fetch (statuses and JSON errors are visible, unlike
 * EventSource), topics are POSTed once it says `connected`, and again after every reconnect with `since` (the
 * position of the last event handled per topic), so the server replays what was missed; an event at or before
 * a known position is never handed over twice; where the server cannot replay, the topic's `gap` handlers run.
 * Reconnects and retried subscriptions wait random(0, min(cap, base x 2^attempt)) ("full jitter"), base being
 * the server's `retry:`, so the clients of a worker that died spread out instead of returning at once.
 */
(function (global) {
  "use strict";

  if (global.Realtime && global.Realtime.VERSION) return; // loaded twice (a <script> and the module): one copy

  const VERSION = "0.1.0";
  const SHARE_PREFIX = "livesite-realtime";
  const MAX_TOPICS_PER_REQUEST = 128; // the server's default REALTIME_MAX_TOPICS_PER_CONNECTION
  const CREDENTIALS_RPC_MS = 3000; // how long the hub waits for a tab to hand over its credentials
  const DEFAULTS = {
    baseUrl: "",
    url: "/realtime/connect",
    subscriptionsUrl: "/realtime/subscriptions",
    ticketsUrl: "/realtime/tickets",
    retryMs: 2000, // the backoff base until the server's `retry:` line says otherwise
    maxRetryMs: 30000, // the backoff cap
    connectTimeoutMs: 15000, // from opening the stream to its `connected` frame
    requestTimeoutMs: 10000, // a subscription or ticket request
    idleTimeoutMs: 45000, // no byte for this long (3 keep-alives of the server's default 15 s): the stream is dead
    share: true,
  };

  // -- small pure pieces -----------------------------------------------------------------------------------

  /** A reconnect or retry delay: random in [0, min(capMs, baseMs x 2^attempt)) ("full jitter"). */
  function backoff(attempt, baseMs, capMs, random) {
    const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.min(attempt, 30)));
    return Math.floor((random || Math.random)() * ceiling);
  }

  function parsePosition(text) {
    if (typeof text !== "string") return null;
    const cut = text.lastIndexOf(":");
    const offset = Number(text.slice(cut + 1));
    return cut < 0 || !Number.isSafeInteger(offset) ? null : { epoch: text.slice(0, cut), offset };
  }

  function formatPosition(position) {
    return position ? `${position.epoch}:${position.offset}` : null;
  }

  /** Record an event's position in `holder`; false if an event at or past it was handled already. */
  function advance(holder, event) {
    if (typeof event.epoch !== "string" || !event.epoch || !Number.isSafeInteger(event.offset)) return true;
    const known = holder.position;
    if (known && known.epoch === event.epoch && event.offset <= known.offset) return false;
    holder.position = { epoch: event.epoch, offset: event.offset };
    return true;
  }

  function randomId() {
    const bytes = new Uint8Array(12);
    global.crypto.getRandomValues(bytes);
    return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  function report(error) {
    if (typeof global.reportError === "function") global.reportError(error);
    else console.error(error);
  }

  function safeCall(handler, argument) {
    try {
      handler(argument);
    } catch (error) {
      report(error); // one broken handler must not starve the others
    }
  }

  function readCookie(name) {
    if (!global.document) return "";
    const match = global.document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  function absolute(url) {
    return global.location ? new URL(url, global.location.href).href : url;
  }

  /** What went wrong, as the server said it ({code, detail} JSON) or as the client saw it (status 0). */
  class RealtimeError extends Error {
    constructor(code, detail, extra) {
      super(detail || code);
      const more = extra || {};
      this.name = "RealtimeError";
      this.code = code;
      this.detail = detail || "";
      this.status = more.status || 0;
      this.topic = more.topic || null;
      this.errors = more.errors || null;
      this.retryable = Boolean(more.retryable);
      this.retryAfterMs = more.retryAfterMs || 0;
    }

    toJSON() {
      const { code, detail, status, topic, errors, retryable, retryAfterMs } = this;
      return { code, detail, status, topic, errors, retryable, retryAfterMs };
    }

    static from(value) {
      if (!value || value instanceof RealtimeError) return value || null;
      return new RealtimeError(value.code, value.detail, value);
    }
  }

  function retryableStatus(status) {
    return status === 0 || status === 408 || status === 429 || status >= 500;
  }

  async function errorFrom(response) {
    let body = null;
    try {
      body = await response.json();
    } catch (_) {
      // Not JSON (a proxy's error page): the status speaks for itself.
    }
    const status = response.status;
    const seconds = Number(response.headers.get("retry-after"));
    return new RealtimeError(
      body && typeof body.code === "string" ? body.code : `http_${status}`,
      body && typeof body.detail === "string" ? body.detail : `${response.statusText || "HTTP"} ${status}`,
      {
        status,
        errors: (body && body.errors) || null,
        retryable: retryableStatus(status),
        retryAfterMs: Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 0,
      },
    );
  }

  function asError(error) {
    if (error instanceof RealtimeError) return error;
    return new RealtimeError("network_error", (error && error.message) || String(error), { retryable: true });
  }

  /** The EventSource wire format, parsed as the HTML standard says (CR, LF or CRLF; comments; BOM). */
  class SSEParser {
    constructor() {
      this.buffer = "";
      this.started = false;
      this.event = "";
      this.data = [];
      this.id = null;
      this.retry = null;
    }

    /** Feed decoded text; returns the frames it completed: [{event, data, id}]. */
    push(text) {
      let buffer = this.buffer + text;
      if (!this.started && buffer) {
        if (buffer.charCodeAt(0) === 0xfeff) buffer = buffer.slice(1);
        this.started = true;
      }
      const frames = [];
      let start = 0;
      for (;;) {
        const cr = buffer.indexOf("\r", start);
        const lf = buffer.indexOf("\n", start);
        if (cr < 0 && lf < 0) break;
        let end = lf;
        let next = lf + 1;
        if (cr >= 0 && (lf < 0 || cr < lf)) {
          if (cr === buffer.length - 1) break; // maybe the CR of a CRLF split across chunks: wait for more
          end = cr;
          next = buffer[cr + 1] === "\n" ? cr + 2 : cr + 1;
        }
        this.line(buffer.slice(start, end), frames);
        start = next;
      }
      this.buffer = buffer.slice(start);
      return frames;
    }

    line(line, frames) {
      if (line === "") {
        if (this.data.length) frames.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        this.event = "";
        this.data = [];
        return;
      }
      if (line[0] === ":") return; // a keep-alive comment
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      else if (field === "id" && !value.includes("\0")) this.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
    }
  }

  // -- the engine: one stream and its subscriptions, for any number of links (tabs) ------------------------
  //
  // A link is {stream(info), topic(topic, info), event(event), gap(topic)}; info objects are plain data (they
  // cross MessagePorts). A topic entry is held by the links that hold it; it is POSTed once for all of them.
  // Entry status: pending (to send) -> sending -> confirmed | retrying (timer) | failed (refused).

  class Engine {
    constructor(config, io) {
      this.config = config;
      this.io = io; // {fetch, random, credentials: () => Promise<{token?, csrfToken?}>}
      this.links = new Set();
      this.entries = new Map();
      this.removals = new Set();
      this.stream = { phase: "connecting", connectionId: null, memberId: null, error: null };
      this.baseMs = config.retryMs;
      this.attempt = 0; // failed stream attempts since the last `connected`
      this.subAttempt = 0; // failed subscription requests since the last confirmed one
      this.everOpen = false;
      this.run = 0; // bumped whenever a stream is dropped on purpose: its async work then stands down
      this.controller = null;
      this.abortReason = null;
      this.timers = new Map();
      this.flushQueued = false;
      this.flushing = false;
      this.stopped = false;
    }

    // timers by name: one of each kind at a time
    later(name, ms, fn) {
      this.cancel(name);
      this.timers.set(
        name,
        setTimeout(() => {
          this.timers.delete(name);
          fn();
        }, ms),
      );
    }

    cancel(name) {
      if (this.timers.has(name)) clearTimeout(this.timers.get(name));
      this.timers.delete(name);
    }

    streamInfo() {
      const { phase, connectionId, memberId, error } = this.stream;
      return { phase, connectionId, memberId, error: error ? error.toJSON() : null };
    }

    setStream(phase, error, connectionId, memberId) {
      this.stream = { phase, connectionId: connectionId || null, memberId: memberId ?? null, error: error || null };
      const info = this.streamInfo();
      for (const link of [...this.links]) link.stream(info);
    }

    topicInfo(entry) {
      return {
        status: entry.status === "sending" ? "pending" : entry.status,
        error: entry.error ? entry.error.toJSON() : null,
        connectionId: entry.status === "confirmed" ? entry.confirmedOn : null,
        position: formatPosition(entry.position),
      };
    }

    tell(entry) {
      const info = this.topicInfo(entry);
      for (const link of [...entry.holders]) link.topic(entry.topic, info);
    }

    // -- links and topics

    attach(link) {
      this.links.add(link);
      link.stream(this.streamInfo());
    }

    detach(link) {
      for (const entry of [...this.entries.values()]) if (entry.holders.has(link)) this.release(link, entry.topic);
      this.links.delete(link);
    }

    /** `since`: where this link stood ("epoch:offset", after a hand-over); `wasLive`: it had it confirmed. */
    hold(link, topic, since, wasLive) {
      let entry = this.entries.get(topic);
      const position = parsePosition(since);
      if (!entry) {
        entry = { topic, holders: new Set(), status: "pending", error: null, position, wasLive: false, alone: false };
        this.entries.set(topic, entry);
        this.scheduleFlush();
      } else if (position && entry.status === "pending") {
        // Not sent yet: resume from the earliest position any holder knows; each link drops what it has had.
        const known = entry.position;
        if (!known || (known.epoch === position.epoch && position.offset < known.offset)) entry.position = position;
      }
      entry.wasLive = entry.wasLive || Boolean(wasLive);
      entry.holders.add(link);
      if (entry.status === "confirmed" || entry.status === "failed") link.topic(topic, this.topicInfo(entry));
    }

    release(link, topic) {
      const entry = this.entries.get(topic);
      if (!entry || !entry.holders.delete(link) || entry.holders.size) return;
      this.entries.delete(topic);
      if (entry.status === "confirmed" || entry.status === "sending") {
        this.removals.add(topic);
        this.scheduleFlush();
      }
    }

    // -- the stream

    start() {
      this.stopped = false;
      this.connect(0);
    }

    stop() {
      this.stopped = true;
      this.run += 1;
      this.abort(null);
      for (const name of [...this.timers.keys()]) this.cancel(name);
      this.stream = { phase: "closed", connectionId: null, memberId: null, error: null };
    }

    /** Drop the stream now and open a new one at once (also after `failed`). */
    reconnect() {
      if (this.stopped) return;
      this.attempt = 0;
      this.dropped(this.everOpen ? "reconnecting" : "connecting", null);
      this.connect(0);
    }

    abort(reason) {
      if (!this.controller) return;
      this.abortReason = reason;
      this.controller.abort();
      this.controller = null;
    }

    connect(delayMs) {
      const run = ++this.run;
      this.abort(null);
      this.later("stream", delayMs, () => this.open(run));
    }

    /** The stream is gone: every topic is to be sent again on the next one. */
    dropped(phase, error) {
      this.cancel("subscriptions");
      this.subAttempt = 0;
      this.removals.clear(); // a new stream starts empty
      for (const entry of this.entries.values()) entry.status = entry.status === "failed" ? "failed" : "pending";
      this.setStream(phase, error);
    }

    async open(run) {
      const controller = new AbortController();
      this.controller = controller;
      this.abortReason = null;
      let why = null;
      const config = this.config;
      this.later("watchdog", config.connectTimeoutMs, () =>
        this.abort(
          new RealtimeError("connect_timeout", `no 'connected' frame within ${config.connectTimeoutMs} ms`, {
            retryable: true,
          }),
        ),
      );
      try {
        let url = config.url;
        if (config.auth === "token") {
          const reply = await this.request("POST", config.ticketsUrl, {});
          if (run !== this.run) return;
          url += (url.includes("?") ? "&" : "?") + "ticket=" + encodeURIComponent(reply.ticket);
        }
        const response = await this.io.fetch(url, {
          headers: { Accept: "text/event-stream" },
          credentials: config.credentials,
          signal: controller.signal,
        });
        if (!response.ok) throw await errorFrom(response);
        why = await this.consume(response.body, run);
      } catch (error) {
        why = (controller.signal.aborted && this.abortReason) || asError(error);
      } finally {
        if (run === this.run) {
          this.cancel("watchdog");
          this.cancel("idle");
        }
      }
      if (run !== this.run || this.stopped) return; // dropped on purpose: close() or reconnect()
      this.lost(why);
    }

    lost(why) {
      this.controller = null;
      if (!why.retryable) {
        this.dropped("failed", why);
        return;
      }
      const delay = Math.max(
        why.retryAfterMs,
        backoff(this.attempt, this.baseMs, this.config.maxRetryMs, this.io.random),
      );
      this.attempt += 1;
      this.dropped(this.everOpen ? "reconnecting" : "connecting", why);
      this.connect(delay);
    }

    async consume(body, run) {
      const reader = body.getReader();
      const decoder = new TextDecoder();
      const parser = new SSEParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (run !== this.run) {
          reader.cancel().catch(() => {}); // nothing to do: this stream was dropped already
          return null;
        }
        if (done) break;
        if (this.config.idleTimeoutMs && this.stream.phase === "open") {
          this.later("idle", this.config.idleTimeoutMs, () =>
            this.abort(new RealtimeError("stream_idle", "nothing arrived, not even a keep-alive", { retryable: true })),
          );
        }
        for (const frame of parser.push(decoder.decode(value, { stream: true }))) {
          const ending = this.onFrame(frame);
          if (run !== this.run) return null; // a handler closed or reconnected the client
          if (ending) {
            reader.cancel().catch(() => {}); // the server ends it anyway
            return ending;
          }
        }
        if (parser.retry !== null) this.baseMs = parser.retry;
      }
      return new RealtimeError("stream_ended", "the server ended the stream", { retryable: true });
    }

    onFrame(frame) {
      let body;
      try {
        body = JSON.parse(frame.data);
      } catch (error) {
        console.warn("realtime: unreadable frame", frame.event, error);
        return null;
      }
      switch (frame.event) {
        case "connected":
          this.onConnected(body);
          return null;
        case "gap":
          this.onGap(body.topics || []);
          return null;
        case "unsubscribed":
          this.onTakenAway(body.topics || [], body.reason);
          return null;
        case "reset":
          return new RealtimeError("reset", "the server dropped this stream for falling behind", { retryable: true });
        case "closing":
          return new RealtimeError("closing", "the server is stopping", { retryable: true });
        case "revoked":
          return new RealtimeError("revoked", String(body.reason || "credentials revoked"), { retryable: true });
        case "error":
          return new RealtimeError(body.code || "stream_error", body.detail || "", { retryable: true });
        case "message":
          return null;
        default:
          this.onEvent(body);
          return null;
      }
    }

    onConnected(hello) {
      this.cancel("watchdog");
      this.attempt = 0;
      this.everOpen = true;
      this.setStream("open", null, hello.connection_id, hello.member_id);
      this.scheduleFlush();
    }

    onEvent(event) {
      const entry = event && typeof event.topic === "string" ? this.entries.get(event.topic) : null;
      if (!entry || !advance(entry, event)) return; // not ours (any more), or handled already
      for (const link of [...entry.holders]) link.event(event);
    }

    onGap(topics) {
      for (const topic of topics) {
        const entry = this.entries.get(topic);
        if (!entry) continue;
        entry.position = null; // its next event, or the next subscription, gives the new one
        for (const link of [...entry.holders]) link.gap(topic);
      }
    }

    onTakenAway(topics, reason) {
      for (const topic of topics) {
        const entry = this.entries.get(topic);
        if (!entry) continue;
        entry.status = "failed";
        entry.position = null;
        entry.error = new RealtimeError("unsubscribed", String(reason || "the server took this topic away"), { topic });
        this.tell(entry);
      }
    }

    // -- subscription requests, one at a time, in order

    scheduleFlush() {
      if (this.flushQueued) return;
      this.flushQueued = true;
      Promise.resolve().then(() => {
        this.flushQueued = false;
        this.flush();
      });
    }

    async flush() {
      if (this.flushing) return; // the running loop picks up whatever is new
      this.flushing = true;
      try {
        // (No controller: the stream is being dropped; the next one sends everything again.)
        while (this.stream.phase === "open" && this.controller && !this.stopped) {
          const connectionId = this.stream.connectionId;
          const gone = [...this.removals].filter((topic) => !this.entries.has(topic));
          this.removals.clear();
          if (gone.length) {
            await this.unsubscribe(connectionId, gone);
            continue;
          }
          const pending = [...this.entries.values()].filter((entry) => entry.status === "pending");
          if (!pending.length) break;
          const alone = pending.find((entry) => entry.alone);
          await this.subscribe(connectionId, alone ? [alone] : pending.slice(0, MAX_TOPICS_PER_REQUEST));
        }
      } finally {
        this.flushing = false;
      }
    }

    async unsubscribe(connectionId, topics) {
      try {
        await this.request("DELETE", this.config.subscriptionsUrl, { connection_id: connectionId, topics });
      } catch (error) {
        // The topics stay on the stream until it ends; events for them are dropped here (no entry).
        console.warn("realtime: unsubscribe failed", topics, error);
      }
    }

    async subscribe(connectionId, batch) {
      const since = {};
      for (const entry of batch) {
        entry.status = "sending";
        entry.resumed = Boolean(entry.position);
        if (entry.position) since[entry.topic] = formatPosition(entry.position);
      }
      const body = { connection_id: connectionId, topics: batch.map((entry) => entry.topic) };
      if (Object.keys(since).length) body.since = since;
      let reply = null;
      let error = null;
      try {
        reply = await this.request("POST", this.config.subscriptionsUrl, body);
      } catch (caught) {
        error = asError(caught);
      }
      if (this.stream.connectionId !== connectionId || this.stopped) return; // that stream is gone already
      const current = batch.filter((entry) => this.entries.get(entry.topic) === entry && entry.status === "sending");
      if (reply) {
        this.subAttempt = 0;
        this.confirmed(current, reply, connectionId);
      } else {
        this.refused(current, error);
      }
    }

    confirmed(batch, reply, connectionId) {
      const positions = (reply && reply.positions) || {};
      for (const entry of batch) {
        entry.status = "confirmed";
        entry.error = null;
        entry.confirmedOn = connectionId;
        if (!entry.position) entry.position = parsePosition(positions[entry.topic]);
        // It was live before and nothing said where it stood (a topic without history, or one whose gap
        // has had no event since): events in between may be lost, and only a refetch can tell.
        if (entry.wasLive && !entry.resumed) for (const link of [...entry.holders]) link.gap(entry.topic);
        entry.wasLive = true;
        this.tell(entry);
      }
    }

    refused(batch, error) {
      if (!batch.length) return;
      if (error.code === "unknown_connection" || error.code === "not_your_connection" || error.status === 404) {
        // The stream is gone, or belongs to someone else now (signed in or out elsewhere): a new one.
        for (const entry of batch) entry.status = "pending";
        this.abort(new RealtimeError(error.code, error.detail, { ...error.toJSON(), retryable: true }));
        return;
      }
      if (error.retryable) {
        for (const entry of batch) {
          entry.status = "retrying";
          entry.error = error;
          this.tell(entry);
        }
        const delay = Math.max(
          error.retryAfterMs,
          backoff(this.subAttempt, this.baseMs, this.config.maxRetryMs, this.io.random),
        );
        this.subAttempt += 1;
        this.later("subscriptions", delay, () => {
          for (const entry of this.entries.values()) if (entry.status === "retrying") entry.status = "pending";
          this.scheduleFlush();
        });
        return;
      }
      if (batch.length > 1) {
        // One refused topic refuses the whole request: one request per topic tells which.
        for (const entry of batch) {
          entry.status = "pending";
          entry.alone = true;
        }
        return;
      }
      const entry = batch[0];
      entry.status = "failed";
      entry.error = new RealtimeError(error.code, error.detail, { ...error.toJSON(), topic: entry.topic });
      this.tell(entry);
    }

    /** A JSON request with the caller's credentials: a token, else the CSRF token (read fresh each time). */
    async request(method, url, body) {
      let credentials;
      try {
        credentials = await this.io.credentials();
      } catch (error) {
        throw new RealtimeError("no_credentials", `credentials unavailable: ${error && error.message}`, {
          retryable: true,
        });
      }
      const headers = { "Content-Type": "application/json", Accept: "application/json" };
      if (credentials.token) headers.Authorization = `Token ${credentials.token}`;
      else if (credentials.csrfToken) headers["X-CSRFToken"] = credentials.csrfToken;
      const controller = new AbortController();
      const timeoutMs = this.config.requestTimeoutMs;
      const timer = setTimeout(() => controller.abort(), timeoutMs);
      try {
        let response;
        try {
          response = await this.io.fetch(url, {
            method,
            headers,
            body: JSON.stringify(body),
            credentials: this.config.credentials,
            signal: controller.signal,
          });
        } catch (error) {
          if (!controller.signal.aborted) throw asError(error);
          throw new RealtimeError("timeout", `${method} ${url}: no answer within ${timeoutMs} ms`, { retryable: true });
        }
        if (!response.ok) throw await errorFrom(response);
        return await response.json();
      } finally {
        clearTimeout(timer);
      }
    }
  }

  // -- the hub: one engine for many tabs (in the SharedWorker, or in the leader tab) -----------------------
  //
  // Messages, tab -> hub: hello {from, config, topics: [{topic, since, wasLive}]}, hold, release, reconnect,
  // credentials {rid, value|error}, bye. Hub -> tab: stream {info}, topic {topic, info}, event {event},
  // gap {topic}, credentials {rid} (asks the tab for its CSRF token or token: a worker has no cookies to read).

  class Hub {
    constructor(lockPrefix) {
      this.lockPrefix = lockPrefix;
      this.engine = null;
      this.endpoints = new Map(); // tab id -> {link, credentials}
      this.calls = new Map();
      this.rid = 0;
    }

    /** A tab in this same context (the leader's own client): direct calls, no messages. */
    attachLocal(id, client) {
      this.add(id, client.config(), client.heldTopics(), sinkOf(client), () => client.credentials());
    }

    receive(from, message, send) {
      const endpoint = this.endpoints.get(from);
      switch (message.op) {
        case "hello":
          this.add(from, message.config, message.topics, remoteSink(send), () => this.ask(send));
          this.watch(from);
          break;
        case "hold":
          if (endpoint) this.engine.hold(endpoint.link, message.topic, message.since, message.wasLive);
          break;
        case "release":
          if (endpoint) this.engine.release(endpoint.link, message.topic);
          break;
        case "reconnect":
          if (endpoint) this.engine.reconnect();
          break;
        case "credentials": {
          const call = this.calls.get(message.rid);
          if (call) call(message);
          break;
        }
        case "bye":
          this.drop(from);
          break;
        default:
          break;
      }
    }

    add(id, config, topics, link, credentials) {
      this.drop(id);
      let fresh = false;
      if (!this.engine) {
        this.engine = new Engine(config, {
          fetch: (...args) => global.fetch(...args),
          credentials: () => this.credentials(),
        });
        fresh = true;
      }
      this.endpoints.set(id, { link, credentials });
      this.engine.attach(link);
      for (const held of topics) this.engine.hold(link, held.topic, held.since, held.wasLive);
      if (fresh) this.engine.start();
    }

    drop(id) {
      const endpoint = this.endpoints.get(id);
      if (!endpoint) return;
      this.endpoints.delete(id);
      this.engine.detach(endpoint.link);
      if (!this.endpoints.size) {
        this.engine.stop(); // nobody left: the stream goes, and a new tab starts a new one
        this.engine = null;
      }
    }

    /** When the tab's own lock is released (it closed, crashed, or navigated away), forget it. */
    watch(id) {
      const locks = global.navigator && global.navigator.locks;
      if (locks) locks.request(`${this.lockPrefix} tab ${id}`, () => this.drop(id));
    }

    /** Credentials from the newest tab that answers (each read fresh: the CSRF cookie changes at sign-in). */
    async credentials() {
      for (const endpoint of [...this.endpoints.values()].reverse()) {
        try {
          return await endpoint.credentials();
        } catch (error) {
          console.warn("realtime: a tab did not hand over credentials", error);
        }
      }
      return {};
    }

    ask(send) {
      const rid = ++this.rid;
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          this.calls.delete(rid);
          reject(new Error("no answer"));
        }, CREDENTIALS_RPC_MS);
        this.calls.set(rid, (message) => {
          clearTimeout(timer);
          this.calls.delete(rid);
          if (message.error) reject(new Error(message.error));
          else resolve(message.value || {});
        });
        send({ op: "credentials", rid });
      });
    }
  }

  function sinkOf(client) {
    return {
      stream: (info) => client.onStream(info),
      topic: (topic, info) => client.onTopic(topic, info),
      event: (event) => client.onEvent(event),
      gap: (topic) => client.onGap(topic),
    };
  }

  function remoteSink(send) {
    return {
      stream: (info) => send({ op: "stream", info }),
      topic: (topic, info) => send({ op: "topic", topic, info }),
      event: (event) => send({ op: "event", event }),
      gap: (topic) => send({ op: "gap", topic }),
    };
  }

  // -- links: how a client reaches its engine --------------------------------------------------------------
  //
  // {hold(topic, since, wasLive), release(topic), reconnect(), detach()}. The client calls these once per
  // topic (its own subscriptions to one topic share it), and receives through the `sink` protocol above.

  function localLink(core) {
    const engine = new Engine(core.config(), {
      fetch: core.options.fetch || ((...args) => global.fetch(...args)),
      random: core.options.random,
      credentials: () => core.credentials(),
    });
    const sink = sinkOf(core);
    engine.attach(sink);
    for (const held of core.heldTopics()) engine.hold(sink, held.topic, held.since, held.wasLive);
    engine.start();
    return {
      mode: "none",
      hold: (topic, since, wasLive) => engine.hold(sink, topic, since, wasLive),
      release: (topic) => engine.release(sink, topic),
      reconnect: () => engine.reconnect(),
      detach: () => {
        engine.detach(sink);
        engine.stop();
      },
    };
  }

  /** Answer the hub's messages for this client (the same for a worker's port and the leader's channel). */
  function answer(core, message, send) {
    switch (message.op) {
      case "stream":
        core.onStream(message.info);
        break;
      case "topic":
        core.onTopic(message.topic, message.info);
        break;
      case "event":
        core.onEvent(message.event);
        break;
      case "gap":
        core.onGap(message.topic);
        break;
      case "credentials":
        core.credentials().then(
          (value) => send({ op: "credentials", rid: message.rid, value }),
          (error) => send({ op: "credentials", rid: message.rid, error: String(error && error.message) }),
        );
        break;
      default:
        break;
    }
  }

  /** Hold this tab's lock for its lifetime: the hub learns the tab is gone when the lock is free. */
  function holdTabLock(name) {
    const locks = global.navigator && global.navigator.locks;
    let released = false;
    let release = () => {};
    if (!locks) return { ready: Promise.resolve(), release: () => {} };
    const ready = new Promise((granted) => {
      locks.request(name, () => {
        if (released) return undefined; // closed before the lock came: give it back at once
        granted();
        return new Promise((resolve) => {
          release = resolve;
        });
      });
    });
    return {
      ready,
      release: () => {
        released = true;
        release();
      },
    };
  }

  function helloOf(core) {
    return { op: "hello", from: core.id, config: core.config(), topics: core.heldTopics() };
  }

  function workerLink(core, shareName, onFailure) {
    const worker = new global.SharedWorker(core.options.workerUrl, { name: shareName });
    const port = worker.port;
    const lock = holdTabLock(`${shareName} tab ${core.id}`);
    const send = (message) => port.postMessage({ ...message, from: core.id });
    let started = false;
    worker.addEventListener("error", () => {
      if (!started) onFailure(new Error(`the shared worker ${core.options.workerUrl} did not start`));
    });
    port.onmessage = (event) => {
      started = true;
      answer(core, event.data, send);
    };
    port.start();
    let sent = false;
    const queue = [];
    lock.ready.then(() => {
      if (core.closed) return;
      sent = true;
      send(helloOf(core)); // after the lock is held, so the hub's watch cannot take it first
      for (const message of queue.splice(0)) send(message);
    });
    const post = (message) => (sent ? send(message) : queue.push(message));
    return {
      mode: "worker",
      hold: (topic, since, wasLive) => sent && post({ op: "hold", topic, since, wasLive }),
      release: (topic) => sent && post({ op: "release", topic }),
      reconnect: () => post({ op: "reconnect" }),
      detach: () => {
        post({ op: "bye" });
        lock.release();
        port.close();
      },
    };
  }

  /** No SharedWorker: the tab holding a Web Lock leads (holds the stream); the others talk to it over a
   * BroadcastChannel, and the next tab in the lock's queue takes over when the leader goes. */
  function leaderLink(core, shareName) {
    const locks = global.navigator.locks;
    const channel = new global.BroadcastChannel(shareName);
    const tabLock = holdTabLock(`${shareName} tab ${core.id}`);
    let hub = null;
    let resign = null;
    let ready = false;
    const toLeader = (message) => channel.postMessage({ ...message, from: core.id, to: "leader" });

    channel.onmessage = (event) => {
      const message = event.data;
      if (hub && message.to === "leader") {
        hub.receive(message.from, message, (reply) => channel.postMessage({ ...reply, to: message.from }));
      } else if (message.to === core.id) {
        answer(core, message, toLeader);
      } else if (message.op === "leader" && !hub && ready) {
        toLeader(helloOf(core)); // a new leader: say again what this tab holds, and where it stood
      }
    };
    tabLock.ready.then(() => {
      ready = true;
      if (!hub) toLeader(helloOf(core));
      locks.request(`${shareName} leader`, () => {
        if (core.closed) return undefined;
        hub = new Hub(shareName);
        hub.attachLocal(core.id, core);
        link.mode = "leader";
        core.sharing = "leader";
        channel.postMessage({ op: "leader", from: core.id });
        return new Promise((resolve) => {
          resign = resolve;
        });
      });
    });
    const link = {
      mode: "follower",
      hold: (topic, since, wasLive) => {
        if (hub) hub.engine.hold(hub.endpoints.get(core.id).link, topic, since, wasLive);
        else if (ready) toLeader({ op: "hold", topic, since, wasLive });
      },
      release: (topic) => {
        if (hub) hub.engine.release(hub.endpoints.get(core.id).link, topic);
        else if (ready) toLeader({ op: "release", topic });
      },
      reconnect: () => (hub ? hub.engine.reconnect() : toLeader({ op: "reconnect" })),
      detach: () => {
        if (hub) {
          hub.drop(core.id);
          for (const id of [...hub.endpoints.keys()]) hub.drop(id);
          hub = null;
          if (resign) resign(); // the next tab in the queue leads
        } else {
          toLeader({ op: "bye" });
        }
        tabLock.release();
        channel.close();
      },
    };
    return link;
  }

  function sharingMode(options) {
    const share = options.share;
    if (!share || !global.document) return "none";
    const canWorker = typeof global.SharedWorker === "function" && Boolean(options.workerUrl);
    const canLead =
      typeof global.BroadcastChannel === "function" && Boolean(global.navigator && global.navigator.locks);
    if (share === "leader") return canLead ? "leader" : "none";
    if (canWorker) return "worker";
    return canLead ? "leader" : "none";
  }

  // -- the client: what a page holds ---------------------------------------------------------------------

  /** A subscription: a function (calling it unsubscribes) that is also a promise of the server's answer. */
  function makeSubscription(client, topic, handlers) {
    let outcome = null;
    let promise = null;
    let settle = null;
    const subscription = function unsubscribe() {
      client.drop(subscription);
    };
    // Only made when someone awaits: a refusal nobody asked about is not an unhandled rejection.
    const materialise = () => {
      if (!promise) {
        promise = new Promise((resolve, reject) => {
          settle = (ok, value) => (ok ? resolve(value) : reject(value));
        });
        if (outcome) settle(outcome.ok, outcome.value);
      }
      return promise;
    };
    Object.defineProperties(subscription, {
      topic: { value: topic, enumerable: true },
      handlers: { value: handlers },
      active: { value: true, writable: true },
      settled: { get: () => outcome !== null },
      ready: { get: materialise },
      unsubscribe: { value: subscription },
      then: { value: (onOk, onError) => materialise().then(onOk, onError) },
      catch: { value: (onError) => materialise().catch(onError) },
      finally: { value: (onFinally) => materialise().finally(onFinally) },
      settle: {
        value: (ok, value) => {
          if (outcome) return;
          outcome = { ok, value };
          if (settle) settle(ok, value);
        },
      },
    });
    return subscription;
  }

  let defaultClient = null;
  let defaultOptions = null;

  class RealtimeClient {
    constructor(options) {
      const given = options || {};
      this.options = { ...DEFAULTS, workerUrl: Realtime.workerUrl, ...given };
      const base = String(this.options.baseUrl || "").replace(/\/+$/, "");
      for (const key of ["url", "subscriptionsUrl", "ticketsUrl"]) {
        this.options[key] = absolute(given[key] || base + DEFAULTS[key]);
        if (!/^https?:/.test(this.options[key])) {
          throw new TypeError(`Realtime: ${key} ${this.options[key]} is not absolute: pass baseUrl outside a browser`);
        }
      }
      this.id = randomId();
      this.topics = new Map(); // topic -> {subscriptions, status, error, connectionId, position, wasLive}
      this.stream = { phase: "connecting", connectionId: null, memberId: null, error: null };
      this.currentState = "connecting";
      this.currentReason = null;
      this.stateHandlers = new Set();
      this.readyHandlers = new Set();
      this.reconnectHandlers = new Set();
      this.lastReady = null; // the connection id of the last time it was ready
      this.readyOn = null;
      this.closed = false;
      this.updating = false;
      this.dirty = false;
      this.sharing = "none";
      this.link = this.openLink(sharingMode(this.options));
    }

    openLink(mode) {
      const shareName = `${SHARE_PREFIX} ${VERSION} ${JSON.stringify(this.shareKey())}`;
      this.sharing = mode === "leader" ? "follower" : mode;
      if (mode === "worker") {
        return workerLink(this, shareName, (error) => {
          // No worker after all (blocked, or the script is not where workerUrl says): share another way.
          console.warn("realtime:", error.message);
          if (this.closed) return;
          this.link.detach();
          this.link = this.openLink(sharingMode({ ...this.options, workerUrl: "" }));
        });
      }
      if (mode === "leader") return leaderLink(this, shareName);
      return localLink(this);
    }

    shareKey() {
      const { url, subscriptionsUrl, ticketsUrl, token } = this.options;
      return [url, subscriptionsUrl, ticketsUrl, token ? "token" : "session"];
    }

    /** What an engine needs to know (plain data: it crosses to the worker). */
    config() {
      const o = this.options;
      return {
        url: o.url,
        subscriptionsUrl: o.subscriptionsUrl,
        ticketsUrl: o.ticketsUrl,
        auth: o.token ? "token" : "session",
        credentials: o.credentials || "same-origin",
        retryMs: o.retryMs,
        maxRetryMs: o.maxRetryMs,
        connectTimeoutMs: o.connectTimeoutMs,
        requestTimeoutMs: o.requestTimeoutMs,
        idleTimeoutMs: o.idleTimeoutMs,
      };
    }

    heldTopics() {
      return [...this.topics].map(([topic, held]) => ({
        topic,
        since: formatPosition(held.position),
        wasLive: held.wasLive,
      }));
    }

    /** Read at each use: a token (string or function), else the CSRF token (option, else the cookie). */
    async credentials() {
      const o = this.options;
      if (o.token) return { token: typeof o.token === "function" ? await o.token() : o.token };
      const csrf = typeof o.csrfToken === "function" ? await o.csrfToken() : o.csrfToken;
      return { csrfToken: csrf || readCookie("csrftoken") };
    }

    get state() {
      return this.currentState;
    }

    /** Why the state is what it is: a RealtimeError for failed (and while retrying), else null. */
    get reason() {
      return this.currentReason;
    }

    get connectionId() {
      return this.stream.phase === "open" ? this.stream.connectionId : null;
    }

    get memberId() {
      return this.stream.memberId;
    }

    subscribe(topic, handlers) {
      if (typeof topic !== "string" || !topic) throw new TypeError("subscribe(topic, handlers): topic is a string");
      const subscription = makeSubscription(this, topic, { ...(handlers || {}) });
      if (this.closed) {
        subscription.settle(false, new RealtimeError("closed", "this client was closed", { topic }));
        return subscription;
      }
      if (this.stream.phase === "failed") {
        // Held all the same: reconnect() (new credentials) subscribes it.
        subscription.settle(false, this.stream.error);
      }
      let held = this.topics.get(topic);
      if (!held) {
        held = {
          subscriptions: new Set(),
          status: "pending",
          error: null,
          connectionId: null,
          position: null,
          wasLive: false,
        };
        this.topics.set(topic, held);
        held.subscriptions.add(subscription);
        this.link.hold(topic, null, false);
      } else {
        held.subscriptions.add(subscription);
        if (held.status === "failed") {
          // Asked again: try again (the member may have signed in since).
          held.status = "pending";
          this.link.release(topic);
          this.link.hold(topic, null, false);
        } else if (this.confirmed(held)) {
          subscription.settle(true, { topic, position: formatPosition(held.position) });
        }
      }
      this.update();
      return subscription;
    }

    /** Drop every handler of `topic` (compatibility; calling a subscription drops just its own). */
    unsubscribe(topic) {
      const held = this.topics.get(topic);
      if (held) for (const subscription of [...held.subscriptions]) this.drop(subscription);
    }

    drop(subscription) {
      if (!subscription.active) return;
      subscription.active = false;
      subscription.settle(
        false,
        new RealtimeError("cancelled", "unsubscribed before the server confirmed", { topic: subscription.topic }),
      );
      const held = this.topics.get(subscription.topic);
      if (!held || !held.subscriptions.delete(subscription)) return;
      if (!held.subscriptions.size) {
        this.topics.delete(subscription.topic);
        if (!this.closed) this.link.release(subscription.topic);
      }
      this.update();
    }

    onState(handler) {
      this.stateHandlers.add(handler);
      safeCall(() => handler(this.currentState, this.currentReason));
      return () => this.stateHandlers.delete(handler);
    }

    onReady(handler) {
      this.readyHandlers.add(handler);
      if (this.currentState === "connected") safeCall(handler);
      return () => this.readyHandlers.delete(handler);
    }

    onReconnect(handler) {
      this.reconnectHandlers.add(handler);
      return () => this.reconnectHandlers.delete(handler);
    }

    /** Drop the stream and open a new one now (after `failed`, or new credentials). */
    reconnect() {
      if (this.closed) throw new RealtimeError("closed", "this client was closed");
      this.link.reconnect();
    }

    close() {
      if (this.closed) return;
      this.closed = true;
      this.link.detach();
      for (const held of this.topics.values()) {
        for (const subscription of held.subscriptions) {
          subscription.settle(
            false,
            new RealtimeError("closed", "the client was closed", { topic: subscription.topic }),
          );
        }
      }
      if (defaultClient === this) defaultClient = null;
      this.update();
    }

    // -- what the engine says (directly, or through the hub)

    onStream(info) {
      if (this.closed) return;
      this.stream = { ...info, error: RealtimeError.from(info.error) };
      if (info.phase === "failed") {
        for (const held of this.topics.values()) {
          for (const subscription of held.subscriptions) subscription.settle(false, this.stream.error);
        }
      }
      this.update();
    }

    onTopic(topic, info) {
      const held = this.topics.get(topic);
      if (!held || this.closed) return;
      held.status = info.status;
      held.error = RealtimeError.from(info.error);
      held.connectionId = info.connectionId;
      if (!held.position) held.position = parsePosition(info.position);
      if (info.status === "confirmed") {
        held.wasLive = true;
        for (const subscription of held.subscriptions) subscription.settle(true, { topic, position: info.position });
      } else if (info.status === "failed") {
        for (const subscription of [...held.subscriptions]) {
          subscription.settle(false, held.error); // the first answer settles the promise; later ones go to `error`
          const handler = subscription.handlers.error;
          if (subscription.active && typeof handler === "function") safeCall(handler, held.error);
        }
      }
      this.update();
    }

    onEvent(event) {
      const held = this.topics.get(event.topic);
      if (!held || this.closed || !advance(held, event)) return;
      for (const subscription of [...held.subscriptions]) {
        const handler = subscription.handlers[event.type];
        if (subscription.active && typeof handler === "function") safeCall(handler, event);
      }
    }

    onGap(topic) {
      const held = this.topics.get(topic);
      if (!held || this.closed) return;
      held.position = null;
      for (const subscription of [...held.subscriptions]) {
        const handler = subscription.handlers.gap;
        if (subscription.active && typeof handler === "function") safeCall(handler, { topic });
      }
    }

    // -- the state

    confirmed(held) {
      return (
        held.status === "confirmed" && held.connectionId === this.stream.connectionId && this.stream.phase === "open"
      );
    }

    compute() {
      if (this.closed) return ["closed", null];
      const stream = this.stream;
      if (stream.phase === "failed") return ["failed", stream.error];
      let retrying = null;
      let pending = false;
      for (const held of this.topics.values()) {
        if (held.status === "failed") return ["failed", held.error];
        if (held.status === "retrying") retrying = retrying || held.error;
        else if (!this.confirmed(held)) pending = true;
      }
      // Once ready on a stream, a topic subscribed since does not take it back to connecting while it is sent.
      if (stream.phase === "open" && !retrying && (!pending || this.readyOn === stream.connectionId)) {
        return ["connected", null];
      }
      return [this.lastReady ? "reconnecting" : "connecting", retrying || stream.error || null];
    }

    update() {
      if (this.updating) {
        this.dirty = true; // a handler changed something: computed again once it returns
        return;
      }
      this.updating = true;
      try {
        do {
          this.dirty = false;
          const [state, reason] = this.compute();
          if (state === this.currentState && reason === this.currentReason) continue;
          const was = this.currentState;
          this.currentState = state;
          this.currentReason = reason;
          for (const handler of [...this.stateHandlers]) safeCall(() => handler(state, reason));
          if (state === "connected" && was !== "connected") {
            const connectionId = this.stream.connectionId;
            const reconnected = this.lastReady !== null && this.lastReady !== connectionId;
            this.readyOn = connectionId;
            this.lastReady = connectionId;
            for (const handler of [...this.readyHandlers]) safeCall(handler);
            if (reconnected) for (const handler of [...this.reconnectHandlers]) safeCall(handler);
          }
        } while (this.dirty);
      } finally {
        this.updating = false;
      }
    }
  }

  function sameOptions(a, b) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    for (const key of keys) if (a[key] !== b[key]) return false;
    return true;
  }

  const script = global.document && global.document.currentScript;
  const Realtime = {
    VERSION,
    /** The page's client: made on the first call, the same one after (until it is closed). */
    connect(options) {
      if (defaultClient) {
        if (options && !sameOptions(defaultOptions, options)) {
          throw new Error(
            "Realtime.connect(options): this page's client was made with other options; " +
              "use new Realtime.Client(options) for a second one",
          );
        }
        return defaultClient;
      }
      defaultOptions = options || {};
      defaultClient = new RealtimeClient(defaultOptions);
      return defaultClient;
    },
    Client: RealtimeClient,
    RealtimeError,
    backoff,
    /** The script a SharedWorker runs (this file): set by the <script> tag, or by realtime.mjs. */
    workerUrl: script && script.src ? script.src : "",
    internals: { SSEParser, Engine, Hub },
  };
  global.Realtime = Realtime;

  // In the SharedWorker this file started: be the hub of every tab that connects.
  if (
    typeof global.SharedWorkerGlobalScope === "function" &&
    global instanceof global.SharedWorkerGlobalScope &&
    String(global.name).startsWith(SHARE_PREFIX)
  ) {
    const hub = new Hub(global.name);
    global.addEventListener("connect", (event) => {
      const port = event.ports[0];
      port.onmessage = (message) => hub.receive(message.data.from, message.data, (reply) => port.postMessage(reply));
      port.start();
    });
  }
})(typeof globalThis !== "undefined" ? globalThis : self);
