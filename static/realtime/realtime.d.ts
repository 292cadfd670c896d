// Types of @livesite/realtime (realtime.mjs, and the global `Realtime` that realtime.js defines).

/** connecting: not live yet; connected: the stream is open and every subscription confirmed; reconnecting:
 * it was live and is not now (the stream dropped, or a subscription is being retried); failed: something
 * was refused for good (see `reason`); closed: `close()` was called. */
export type State = "connecting" | "connected" | "reconnecting" | "failed" | "closed";

/** One event as the server sends it. `epoch`/`offset` are its position in the topic's history (absent for
 * topics without history). */
export interface RealtimeEvent<T = unknown> {
  id: string;
  topic: string;
  type: string;
  data: T;
  published_at: number;
  epoch?: string;
  offset?: number;
}

/** This topic's missed events are lost for good (history trimmed or lost): refetch its state. */
export interface GapNotice {
  topic: string;
}

/** The server's `{code, detail}` (status > 0), or the client's own (status 0: network, timeout). */
export declare class RealtimeError extends Error {
  readonly name: "RealtimeError";
  /** Stable: forbidden_topic, csrf_failed, too_many_topics, invalid, invalid_token, unknown_connection,
   * realtime_unavailable, rate_limited, too_many_streams, unsubscribed (taken away), cancelled, closed,
   * network_error, timeout, connect_timeout, stream_idle, reset, closing, revoked, ... */
  readonly code: string;
  readonly detail: string;
  /** The HTTP status, or 0. */
  readonly status: number;
  /** The topic a subscription error is about. */
  readonly topic: string | null;
  /** Field errors of a 400 (`{field: [messages]}`). */
  readonly errors: Record<string, unknown> | null;
  /** Whether the client retries by itself (429, 5xx, network). */
  readonly retryable: boolean;
  /** The server's Retry-After, in milliseconds (0 if none). */
  readonly retryAfterMs: number;
}

/** Event type -> handler, plus two reserved keys: `gap` and `error` (no event may have those types). The keys
 * are inferred, so each handler gets its own parameter type; type an event's data by annotating it:
 * `"like.created": (event: RealtimeEvent<Like>) => ...`. */
export type Handlers<K extends string = string> = {
  [P in K]?: P extends "gap"
    ? /** Events of this topic were lost for good: refetch its state. */ (notice: GapNotice) => void
    : P extends "error"
      ? /** The subscription was refused, or taken away later (`code` "unsubscribed"). */ (error: RealtimeError) => void
      : (event: RealtimeEvent<any>) => void;
};

/** What `subscribe()` resolves to: the topic, and where it stood ("epoch:offset"). */
export interface Confirmation {
  topic: string;
  position: string | null;
}

/** A subscription: call it to unsubscribe; await it for the server's answer. Pass `.ready` (a real Promise)
 * to APIs that take "a promise or a function" (they would call the function). */
export interface Subscription extends PromiseLike<Confirmation> {
  (): void;
  readonly topic: string;
  readonly ready: Promise<Confirmation>;
  readonly settled: boolean;
  unsubscribe(): void;
  catch<R = never>(onRejected?: ((error: RealtimeError) => R | PromiseLike<R>) | null): Promise<Confirmation | R>;
  finally(onFinally?: (() => void) | null): Promise<Confirmation>;
}

export interface ConnectOptions {
  /** Origin of the server ("" = this page's). Needed in Node: "https://example.com". */
  baseUrl?: string;
  /** Each endpoint, if not at the usual path under baseUrl. */
  url?: string;
  subscriptionsUrl?: string;
  ticketsUrl?: string;
  /** Authenticate with a DRF token (a ticket is fetched for each stream; POSTs send `Authorization`). */
  token?: string | (() => string | Promise<string>);
  /** Session callers: the CSRF token; by default the `csrftoken` cookie, read at every request. */
  csrfToken?: string | (() => string | Promise<string>);
  /** fetch's `credentials` (default "same-origin"). */
  credentials?: RequestCredentials;
  /** One stream per browser: true (default) shares through a SharedWorker where there is one, else a
   * leader tab (Web Locks + BroadcastChannel); "leader" forces the latter; false: a stream of its own. */
  share?: boolean | "leader";
  /** Where realtime.js is served (the SharedWorker's script); set by the <script> tag or the module. */
  workerUrl?: string;
  /** Backoff base until the server's `retry:` says otherwise (2000), and cap (30000), in ms. */
  retryMs?: number;
  maxRetryMs?: number;
  /** From opening the stream to its `connected` frame (15000 ms). */
  connectTimeoutMs?: number;
  /** A subscription or ticket request (10000 ms). */
  requestTimeoutMs?: number;
  /** No byte (not even a keep-alive) for this long: reconnect (45000 ms; 0 = never). */
  idleTimeoutMs?: number;
  /** For tests and non-browser hosts. */
  fetch?: typeof fetch;
  random?: () => number;
}

export declare class Client {
  constructor(options?: ConnectOptions);
  readonly state: State;
  /** Why: the error behind `failed`, or the last one while retrying; else null. */
  readonly reason: RealtimeError | null;
  readonly connectionId: string | null;
  readonly memberId: number | null;
  /** How this client shares its stream: "worker", "leader", "follower" or "none". */
  readonly sharing: "worker" | "leader" | "follower" | "none";
  subscribe<K extends string>(topic: string, handlers?: Handlers<K>): Subscription;
  /** Drop every handler of `topic` in this client. */
  unsubscribe(topic: string): void;
  /** Called at once with the current state, then on every change. Returns a function that removes it. */
  onState(handler: (state: State, reason: RealtimeError | null) => void): () => void;
  /** Each time the state becomes connected (the first time too): load state, then apply events. */
  onReady(handler: () => void): () => void;
  /** After a reconnection (a new stream) is ready; resumed topics need no refetch. */
  onReconnect(handler: () => void): () => void;
  /** Drop the stream and open a new one now (after `failed`, or new credentials). */
  reconnect(): void;
  close(): void;
}

/** The page's client: made on the first call, the same one after; other options throw (use `new Client`). */
export declare function connect(options?: ConnectOptions): Client;
/** A delay in ms: random in [0, min(capMs, baseMs x 2^attempt)). */
export declare function backoff(attempt: number, baseMs: number, capMs: number, random?: () => number): number;
export declare const VERSION: string;

export interface RealtimeNamespace {
  readonly VERSION: string;
  connect: typeof connect;
  Client: typeof Client;
  RealtimeError: typeof RealtimeError;
  backoff: typeof backoff;
  workerUrl: string;
}
export declare const Realtime: RealtimeNamespace;
export default Realtime;

declare global {
  /** Defined by `<script src=".../realtime.js">`. */
  var Realtime: RealtimeNamespace;
}
