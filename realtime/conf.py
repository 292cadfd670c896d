"""The REALTIME settings dict, its defaults, and a lazy accessor."""

from typing import Any

from django.conf import settings

# Values of several types (seconds, counts, names, a dict of peers), and REALTIME in settings may hold anything:
# Any is that settings boundary. Each caller knows the type of the name it reads.
DEFAULTS: dict[str, Any] = {
    # A comment line every KEEPALIVE_SECS: Daphne pings only WebSockets, so a dead SSE client is found
    # only when a write fails.
    "KEEPALIVE_SECS": 15.0,
    # A worker's topic registration (a channel-layer group membership) lives this long unless refreshed;
    # refreshed every third of it. Bounds how long a SIGKILLed worker still receives events.
    "LEASE_SECS": 60.0,
    "MAX_TOPICS_PER_CONNECTION": 128,
    # First topic segments the operator opens to API publishers (realtime.policies): anyone may read
    # `<name>.*`, and holders of realtime.publish_event may publish any type there but the control frames.
    # Every other namespace is declared by the app that owns it, or refused.
    "OPEN_NAMESPACES": [],
    # Rates per scope (realtime.limits), "N/s", "N/m" or "N/h"; "" or "0": not limited. Who is counted: the
    # client address for connect and sign_in, the member (else the address) for the others.
    "RATE_LIMITS": {
        "connect": "30/s",
        "subscribe": "50/s",
        "publish": "2000/s",
        "like": "10/s",
        "comment": "2/s",
        "sign_in": "10/m",
    },
    # Streams open at once per client address and per member, across workers (realtime.caps); 0: no cap.
    "MAX_STREAMS": {"address": 100, "member": 20},
    # Frames held for one connection while its socket does not drain; past this the stream is closed
    # with a `reset` frame so the client reconnects and refetches.
    "MAX_PENDING_FRAMES": 1000,
    "RETRY_MS": 2000,
    # A request whose headers (under Daphne) and body are not all in within this is answered 408 and closed;
    # under other servers the body's deadline is realtime.servers.guard's, for Django's requests.
    "REQUEST_DEADLINE_SECS": 30.0,
    # The largest event, as its SSE frame; a bigger publish is refused (400).
    "MAX_EVENT_BYTES": 65_536,
    # A stream gets at most one write per topic per FLUSH_MS: events arriving sooner after the previous
    # fan-out wait for the next one and go out together (realtime.outbox). 0: every event at once.
    "FLUSH_MS": 20.0,
    # How long a subscription request waits for the worker that holds the connection.
    "RPC_TIMEOUT_SECS": 3.0,
    "DATA_CENTER": "dc1",
    # How often a worker calls the member-heartbeat hooks (realtime.hooks) with the members it holds.
    "HEARTBEAT_SECS": 30.0,
    # Topics whose live subscriber count is summed over all workers every CENSUS_SECS and announced as
    # `census.changed` on `census.<topic>` (a regular expression; empty disables the census).
    "CENSUS_TOPICS": "",
    "CENSUS_SECS": 5.0,
    # Cross-data-centre dispatch: {"dc2": "http://host:port", ...}; empty disables forwarding.
    "PEERS": {},
    "PEER_SECRET": "",
    "PEER_QUEUE_CAPACITY": 10_000,
    "PEER_TIMEOUT_SECS": 5.0,
    # Networks /metrics answers without credentials (the Prometheus scraper's); anyone else needs a staff token.
    "METRICS_ALLOW": ["127.0.0.0/8", "::1/128"],
    # How long a process remembers a DRF token's user (realtime.tokens); 0: a query per request.
    "TOKEN_CACHE_SECS": 10.0,
    # Per-topic history (realtime.history), which resumes a client after a reconnect: at most HISTORY_SIZE
    # events per topic, none older than HISTORY_SECS; a topic's position (epoch, offset) is kept for
    # HISTORY_META_SECS after its last event. HISTORY_EXCLUDE: topics without history (a regular expression,
    # e.g. typing indicators), whose events carry no position and never resume (a `gap`). Size 0: no history.
    "HISTORY_SIZE": 1000,
    "HISTORY_SECS": 300.0,
    "HISTORY_META_SECS": 86_400.0,
    "HISTORY_EXCLUDE": "",
    # A worker that receives a topic's events out of order (two publishers racing) holds the later ones this
    # long for the missing ones, then reads them from the history (or announces a gap).
    "REORDER_MS": 100.0,
}


def get(name: str) -> Any:
    """Return REALTIME[name] from settings, falling back to the default."""
    return getattr(settings, "REALTIME", {}).get(name, DEFAULTS[name])
