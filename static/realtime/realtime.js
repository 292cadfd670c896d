/*
 * livesite realtime client: ONE EventSource per page, topic subscriptions over HTTP POST, automatic
 * resubscription after every reconnect.
 *
 *   const rt = Realtime.connect();                       // opens /realtime/connect once
 *   const off = rt.subscribe("video.1.likes", {          // event type -> handler
 *     "like.created": (event) => console.log(event.data.count),
 *   });
 *   rt.onState((state) => ...);                          // "connecting" | "connected" | "reconnecting"
 *   rt.onReady(() => loadState());                       // each time the stream is open AND topics are in
 *                                                        // place (first time too): load state, then apply
 *                                                        // events, and nothing in between is missed
 *   rt.subscribe("video.1.comments", {
 *     "comment.created": (event) => show(event.data),
 *     gap: () => refetchComments(),                      // events of this topic were lost for good
 *   });
 *   rt.onReconnect(() => ...);                           // after a reconnection (nothing to refetch: see below)
 *   off();                                               // unsubscribe this handler (last one: topic too)
 *
 * Each event is {id, topic, type, data, published_at, epoch, offset}. The client remembers, per topic, the
 * position (epoch, offset) of the last event it handled, or where the topic stood when it subscribed, and
 * resubscribes with it after every reconnect: the server replays what was missed, in order, each event once.
 * Where it cannot (the topic's history was trimmed or lost), the topic's `gap` handlers run: refetch only
 * that topic's state. An event already handled is never handled twice.
 *
 * Reconnects wait a random 0.5-1.5 x the server's retry delay, so thousands of clients of a worker that
 * died do not all arrive in the same millisecond. Subscriptions made before the stream is open are sent
 * once it is. POSTs carry the CSRF token from the `csrftoken` cookie (or options.csrfToken).
 */
(function (global) {
  "use strict";

  const MAX_TOPICS_PER_REQUEST = 128;
  const RETRY_MS = 2000;

  function jittered(ms) {
    return Math.round(ms * (0.5 + Math.random()));
  }

  function readCookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  class RealtimeClient {
    constructor(options) {
      this.url = options.url || "/realtime/connect";
      this.subscriptionsUrl = options.subscriptionsUrl || "/realtime/subscriptions";
      this.csrfToken = options.csrfToken || readCookie("csrftoken");
      this.topics = new Map(); // topic -> Map(eventType -> Set(handler)); "gap" for lost events
      this.positions = new Map(); // topic -> {epoch, offset} of the last event handled (or the subscription)
      this.listening = new Set(); // event types with an EventSource listener
      this.stateHandlers = new Set();
      this.reconnectHandlers = new Set();
      this.readyHandlers = new Set();
      this.connectionId = null;
      this.state = "connecting";
      this.everConnected = false;
      this.source = null;
      this.retryTimer = null;
      this.open();
    }

    open() {
      this.retryTimer = null;
      const source = (this.source = new EventSource(this.url, { withCredentials: true }));
      source.addEventListener("connected", (message) => this.onConnected(JSON.parse(message.data)));
      // Dropped for falling behind, or the worker is stopping: reconnect (elsewhere) and resume.
      source.addEventListener("reset", () => this.reconnect(500));
      source.addEventListener("closing", () => this.reconnect(RETRY_MS));
      source.addEventListener("gap", (message) => this.onGap(JSON.parse(message.data)));
      source.addEventListener("error", () => {
        // Not EventSource's own retry: a fixed delay would bring every client of a dead worker back at once.
        if (this.source === source) this.reconnect(RETRY_MS);
      });
      for (const type of this.listening) this.listen(type, true);
    }

    reconnect(delayMs) {
      this.source.close();
      this.connectionId = null;
      if (this.state !== "reconnecting") this.setState("reconnecting");
      if (this.retryTimer === null) this.retryTimer = setTimeout(() => this.open(), jittered(delayMs));
    }

    async onConnected(hello) {
      this.connectionId = hello.connection_id;
      const topics = [...this.topics.keys()];
      for (let i = 0; i < topics.length; i += MAX_TOPICS_PER_REQUEST) {
        await this.post("POST", topics.slice(i, i + MAX_TOPICS_PER_REQUEST), true);
      }
      const again = this.everConnected;
      this.everConnected = true;
      this.setState("connected");
      this.readyHandlers.forEach((handler) => handler());
      if (again) this.reconnectHandlers.forEach((handler) => handler());
    }

    listen(type, force) {
      if (this.listening.has(type) && !force) return;
      this.listening.add(type);
      this.source.addEventListener(type, (message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch (error) {
          console.warn("realtime: unreadable event", error);
          return;
        }
        if (!this.advance(event)) return; // handled already (a replay that overlapped live events)
        const handlers = this.topics.get(event.topic);
        const forType = handlers && handlers.get(event.type);
        if (forType) forType.forEach((handler) => handler(event));
      });
    }

    /** Record an event's position; false if an event at or past it was handled already. */
    advance(event) {
      if (!event.epoch) return true; // a topic without history: no position
      const known = this.positions.get(event.topic);
      if (known && known.epoch === event.epoch && event.offset <= known.offset) return false;
      this.positions.set(event.topic, { epoch: event.epoch, offset: event.offset });
      return true;
    }

    onGap(body) {
      for (const topic of body.topics || []) {
        // Its next event (or the next subscription) gives the new position.
        this.positions.delete(topic);
        const handlers = this.topics.get(topic);
        const forGap = handlers && handlers.get("gap");
        if (forGap) forGap.forEach((handler) => handler({ topic }));
      }
    }

    subscribe(topic, handlersByType) {
      let handlers = this.topics.get(topic);
      const isNew = !handlers;
      if (isNew) {
        handlers = new Map();
        this.topics.set(topic, handlers);
      }
      const added = [];
      for (const [type, handler] of Object.entries(handlersByType)) {
        if (!handlers.has(type)) handlers.set(type, new Set());
        handlers.get(type).add(handler);
        added.push([type, handler]);
        if (type !== "gap") this.listen(type, false);
      }
      if (isNew && this.connectionId) this.post("POST", [topic]);
      return () => {
        for (const [type, handler] of added) {
          const set = handlers.get(type);
          if (set) {
            set.delete(handler);
            if (!set.size) handlers.delete(type);
          }
        }
        if (!handlers.size) this.unsubscribe(topic);
      };
    }

    unsubscribe(topic) {
      if (!this.topics.delete(topic)) return;
      this.positions.delete(topic);
      if (this.connectionId) this.post("DELETE", [topic]);
    }

    onState(handler) {
      this.stateHandlers.add(handler);
      handler(this.state);
      return () => this.stateHandlers.delete(handler);
    }

    onReady(handler) {
      this.readyHandlers.add(handler);
      if (this.state === "connected") handler();
      return () => this.readyHandlers.delete(handler);
    }

    onReconnect(handler) {
      this.reconnectHandlers.add(handler);
      return () => this.reconnectHandlers.delete(handler);
    }

    setState(state) {
      this.state = state;
      this.stateHandlers.forEach((handler) => handler(state));
    }

    async post(method, topics, resume) {
      const connectionId = this.connectionId;
      const body = { connection_id: connectionId, topics };
      if (resume) {
        const since = {};
        for (const topic of topics) {
          const at = this.positions.get(topic);
          if (at) since[topic] = `${at.epoch}:${at.offset}`;
        }
        if (Object.keys(since).length) body.since = since;
      }
      try {
        const response = await fetch(this.subscriptionsUrl, {
          method,
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrfToken },
          body: JSON.stringify(body),
        });
        if (!response.ok) {
          console.warn("realtime: subscription refused", response.status, await response.text());
          return;
        }
        const reply = await response.json();
        // Where each new topic stood: resumable after a reconnect even if no event arrives before it.
        for (const [topic, position] of Object.entries(reply.positions || {})) {
          if (this.topics.has(topic) && !this.positions.has(topic)) {
            const cut = position.lastIndexOf(":");
            this.positions.set(topic, { epoch: position.slice(0, cut), offset: Number(position.slice(cut + 1)) });
          }
        }
      } catch (error) {
        // The stream's error handler reconnects, and onConnected resubscribes everything.
        console.warn("realtime: subscription request failed", error);
      }
    }

    close() {
      if (this.source) this.source.close();
    }
  }

  let shared = null;
  global.Realtime = {
    /** The page's one client (created on first call; later calls return the same one). */
    connect(options) {
      if (!shared) shared = new RealtimeClient(options || {});
      return shared;
    },
  };
})(window);
