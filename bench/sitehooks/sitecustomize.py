"""What-if hooks for benchmark workers, loaded only when a run asks for them (never in production).

bench/fanout.py puts this directory first on a worker's PYTHONPATH with --worker-gc-stats, --worker-gc-threshold,
--worker-gc-freeze or --worker-uvloop, so the core can be measured with a change before anyone makes it:
BENCH_GC_STATS=path counts garbage collections per generation and their time, written to path (JSON) every
second; BENCH_GC_THRESHOLD=a,b,c calls gc.set_threshold(a, b, c); BENCH_GC_FREEZE_SECS=s calls gc.freeze() every
s seconds (long-lived objects, e.g. open streams, are then never traversed again); BENCH_UVLOOP=1 sets uvloop's
event-loop policy before daphne.server creates its loop.
"""

import gc
import json
import os
import threading
import time

_stats = os.environ.get("BENCH_GC_STATS")
_threshold = os.environ.get("BENCH_GC_THRESHOLD")
_freeze = float(os.environ.get("BENCH_GC_FREEZE_SECS") or 0)
_counts, _seconds, _collected, _started = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0], [0.0]

if _threshold:
    gc.set_threshold(*(int(part) for part in _threshold.split(",")))

if os.environ.get("BENCH_UVLOOP") == "1":
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        generation = info["generation"]
        _counts[generation] += 1
        _seconds[generation] += time.perf_counter() - _started[0]
        _collected[generation] += info["collected"]


def _loop() -> None:
    last_freeze = time.monotonic()
    while True:
        time.sleep(1)
        if _freeze and time.monotonic() - last_freeze >= _freeze:
            gc.freeze()
            last_freeze = time.monotonic()
        if _stats:
            data = {"time": time.time(), "counts": _counts, "seconds": _seconds, "collected": _collected}
            data |= {"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}
            data["tracked_by_generation"] = gc.get_count()
            with open(f"{_stats}.tmp", "w") as handle:
                json.dump(data, handle)
            os.replace(f"{_stats}.tmp", _stats)


if _stats:
    gc.callbacks.append(_on_gc)
if _stats or _freeze:
    threading.Thread(target=_loop, name="bench-gc-hooks", daemon=True).start()
