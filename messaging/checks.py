"""System checks for the MESSAGING settings."""

from typing import Any

from django.core.checks import Error, register

from messaging import conf

MAX_ACCESS_CACHE_SECS = 3600


@register()
def check_messaging_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    problems: list[Error] = []
    limit = conf.get("MAX_PARTICIPANTS")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        problems.append(
            Error(
                f"MESSAGING MAX_PARTICIPANTS must be a whole number of at least 2, not {limit!r}", id="messaging.E001"
            )
        )
    throttle, timeout = conf.get("TYPING_THROTTLE_SECS"), conf.get("TYPING_TIMEOUT_SECS")
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (throttle, timeout))
    if not numbers or throttle <= 0 or timeout <= throttle:
        # A mark must outlive the interval between two announced starts, or the indicator would flicker off
        # between refreshes.
        problems.append(
            Error(
                f"MESSAGING TYPING_TIMEOUT_SECS ({timeout!r}) must be above TYPING_THROTTLE_SECS ({throttle!r}), "
                "both positive seconds",
                hint="e.g. MESSAGING_TYPING_THROTTLE_SECS=2 and MESSAGING_TYPING_TIMEOUT_SECS=6",
                id="messaging.E002",
            )
        )
    sweep = conf.get("TYPING_SWEEP_SECS")
    if isinstance(sweep, bool) or not isinstance(sweep, int | float) or sweep <= 0:
        problems.append(
            Error(f"MESSAGING TYPING_SWEEP_SECS must be positive seconds, not {sweep!r}", id="messaging.E003")
        )
    window = conf.get("RECEIPT_COALESCE_MS")
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        problems.append(
            Error(
                f"MESSAGING RECEIPT_COALESCE_MS must be a positive whole number of milliseconds, not {window!r}",
                id="messaging.E004",
            )
        )
    size, secs = conf.get("ACCESS_CACHE_SIZE"), conf.get("ACCESS_CACHE_SECS")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        problems.append(
            Error(
                f"MESSAGING ACCESS_CACHE_SIZE must be a whole number of entries (0: no cache), not {size!r}",
                id="messaging.E006",
            )
        )
    if isinstance(secs, bool) or not isinstance(secs, int | float) or not 0 < secs <= MAX_ACCESS_CACHE_SECS:
        # Above VERSION_KEEP_SECS a version key could expire back to its initial value under a live entry.
        problems.append(
            Error(
                f"MESSAGING ACCESS_CACHE_SECS must be positive seconds, at most {MAX_ACCESS_CACHE_SECS:,}, "
                f"not {secs!r}",
                id="messaging.E007",
            )
        )
    try:
        conf.parse_rates(conf.get("RATE_LIMITS"))
    except ValueError as exc:
        problems.append(
            Error(
                str(exc),
                hint="e.g. MESSAGING_RATE_LIMITS=message=5/s,typing=5/s,conversation=30/m",
                id="messaging.E005",
            )
        )
    return problems
