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
 *   rt.onReconnect(() => refetchCounts());               // the same, but only after a reconnection
 *   off();                                               // unsubscribe this handler (last one: topic too)
 *
 * Each event is {id, topic, type, data, published_at}. Subscriptions made before the stream is open are
 * sent once it is. POSTs carry the CSRF token from the `csrftoken` cookie (or options.csrfToken).
 */
(function (global) {
  "use strict";

  const MAX_TOPICS_PER_REQUEST = 128;

  function readCookie(name) {
    const match = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
    return match ? decodeURIComponent(match[1]) : "";
  }

  class RealtimeClient {
    constructor(options) {
      this.url = options.url || "/realtime/connect";
      this.subscriptionsUrl = options.subscriptionsUrl || "/realtime/subscriptions";
      this.csrfToken = options.csrfToken || readCookie("csrftoken");
      this.topics = new Map(); // topic -> Map(eventType -> Set(handler))
      this.listening = new Set(); // event types with an EventSource listener
      this.stateHandlers = new Set();
      this.reconnectHandlers = new Set();
      this.readyHandlers = new Set();
      this.connectionId = null;
      this.state = "connecting";
      this.everConnected = false;
      this.source = null;
      this.open();
    }

    open() {
      this.source = new EventSource(this.url, { withCredentials: true });
      this.source.addEventListener("connected", (message) => this.onConnected(JSON.parse(message.data)));
      this.source.addEventListener("reset", () => {
        // The server dropped us for falling behind: start over with a fresh stream.
        this.source.close();
        this.setState("reconnecting");
        this.connectionId = null;
        setTimeout(() => this.open(), 500);
      });
      this.source.addEventListener("error", () => {
        this.connectionId = null;
        if (this.state !== "reconnecting") this.setState("reconnecting");
        // EventSource retries by itself unless the server answered with an error status.
        if (this.source.readyState === EventSource.CLOSED) setTimeout(() => this.open(), 2000);
      });
      for (const type of this.listening) this.listen(type, true);
    }

    async onConnected(hello) {
      this.connectionId = hello.connection_id;
      const topics = [...this.topics.keys()];
      for (let i = 0; i < topics.length; i += MAX_TOPICS_PER_REQUEST) {
        await this.post("POST", topics.slice(i, i + MAX_TOPICS_PER_REQUEST));
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
        const handlers = this.topics.get(event.topic);
        const forType = handlers && handlers.get(event.type);
        if (forType) forType.forEach((handler) => handler(event));
      });
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
        this.listen(type, false);
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

    async post(method, topics) {
      const connectionId = this.connectionId;
      try {
        const response = await fetch(this.subscriptionsUrl, {
          method,
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", "X-CSRFToken": this.csrfToken },
          body: JSON.stringify({ connection_id: connectionId, topics }),
        });
        if (!response.ok) console.warn("realtime: subscription refused", response.status, await response.text());
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
