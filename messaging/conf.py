"""The MESSAGING settings dict, its defaults, and a lazy accessor."""

from typing import Any

from django.conf import settings

from realtime import limits

# Values of several types (counts, seconds, a rate table); each caller knows the type of the name it reads.
DEFAULTS: dict[str, Any] = {
    # Participants of one conversation, its creator included.
    "MAX_PARTICIPANTS": 100,
    # At most one `typing` {"typing": true} per member per conversation per this many seconds, however often
    # the member's page refreshes it; each is followed by at most one stop.
    "TYPING_THROTTLE_SECS": 2.0,
    # A member who neither refreshes nor stops within this many seconds stops typing: a worker's sweeper
    # announces it (`reason: "expired"`), and pages hide the indicator by themselves a second later anyway.
    "TYPING_TIMEOUT_SECS": 6.0,
    # How often each worker looks for typing marks that expired (one Redis call when REDIS_URL is set).
    "TYPING_SWEEP_SECS": 0.5,
    # At most one `receipt.seen` per member per conversation per this many milliseconds (messaging.receipts).
    "RECEIPT_COALESCE_MS": 300,
    # Rates per member and scope (realtime.limits' "N/s", "N/m", "N/h"; "" or "0": off), 429 past them:
    # messages sent or edited, typing calls, conversations created. Settings give "scope=rate,..." text.
    "RATE_LIMITS": "",
    # Per worker: (member, conversation) pairs found participating, kept so a stream's further subscriptions
    # and reconnects to the same conversation cost no database query (messaging.access). About 200 bytes each:
    # 10,000 entries, 2 MB. 0 turns the cache off (one query per check).
    "ACCESS_CACHE_SIZE": 10_000,
    # How long an entry is trusted at most, in seconds (at most 3,600). Removals invalidate entries at once
    # through the conversation's access version; this only bounds what a lost version change could cost.
    "ACCESS_CACHE_SECS": 60.0,
}

RATE_DEFAULTS: dict[str, str] = {"message": "5/s", "typing": "5/s", "conversation": "30/m"}


def get(name: str) -> Any:
    """Return MESSAGING[name] from settings, falling back to the default."""
    return getattr(settings, "MESSAGING", {}).get(name, DEFAULTS[name])


def parse_rates(value: object) -> dict[str, str]:
    """RATE_DEFAULTS overridden by "scope=rate,..." text (or a dict); raises ValueError naming a bad entry."""
    rates = dict(RATE_DEFAULTS)
    items: list[tuple[str, str]]
    if isinstance(value, dict):
        items = [(str(scope), str(rate)) for scope, rate in value.items()]
    else:
        items = []
        for item in filter(None, (part.strip() for part in str(value or "").split(","))):
            scope, sep, rate = item.partition("=")
            if not sep:
                raise ValueError(f"MESSAGING_RATE_LIMITS entry {item!r} is not scope=rate")
            items.append((scope.strip(), rate.strip()))
    for scope, rate in items:
        if scope not in RATE_DEFAULTS:
            raise ValueError(f"MESSAGING_RATE_LIMITS scope {scope!r} is not one of {sorted(RATE_DEFAULTS)}")
        limits.parse_rate(rate)  # raises ValueError for anything but N/s, N/m, N/h, "" or "0"
        rates[scope] = rate
    return rates


def rate(scope: str) -> limits.Rate | None:
    """The configured rate of one of messaging's scopes, or None when it is not limited."""
    return limits.parse_rate(parse_rates(get("RATE_LIMITS"))[scope])
