"""What-if hooks for benchmark workers, loaded only when a run asks for them (never in production).

fanout.py puts this directory first on a worker's PYTHONPATH when given --worker-gc-stats, --worker-gc-threshold,
--worker-gc-freeze or --worker-uvloop, so the core can be measured with a change before anyone makes it:

- BENCH_GC_STATS=path: count garbage collections per generation and the time they take; written to path
  (JSON) every second.
- BENCH_GC_THRESHOLD=a,b,c: gc.set_threshold(a, b, c).
- BENCH_GC_FREEZE_SECS=s: gc.freeze() every s seconds (long-lived objects, e.g. open streams, leave the
  collected generations and are never traversed again).
- BENCH_UVLOOP=1: uvloop's event-loop policy, set before daphne.server creates its loop.
"""

import gc
import json
import os
import threading
import time

_stats = os.environ.get("BENCH_GC_STATS")
_threshold = os.environ.get("BENCH_GC_THRESHOLD")
_freeze = float(os.environ.get("BENCH_GC_FREEZE_SECS") or 0)

if _threshold:
    gc.set_threshold(*(int(part) for part in _threshold.split(",")))

if os.environ.get("BENCH_UVLOOP") == "1":
    import asyncio

    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

if _stats:
    _counts = [0, 0, 0]
    _seconds = [0.0, 0.0, 0.0]
    _collected = [0, 0, 0]
    _started = [0.0]

    def _on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            _started[0] = time.perf_counter()
        else:
            generation = info["generation"]
            _counts[generation] += 1
            _seconds[generation] += time.perf_counter() - _started[0]
            _collected[generation] += info["collected"]

    gc.callbacks.append(_on_gc)

if _stats or _freeze:

    def _loop() -> None:
        last_freeze = time.monotonic()
        while True:
            time.sleep(1)
            if _freeze and time.monotonic() - last_freeze >= _freeze:
                gc.freeze()
                last_freeze = time.monotonic()
            if _stats:
                data = {
                    "time": time.time(),
                    "counts": _counts,
                    "seconds": _seconds,
                    "collected": _collected,
                    "threshold": gc.get_threshold(),
                    "frozen": gc.get_freeze_count(),
                    "tracked_by_generation": gc.get_count(),
                }
                temporary = f"{_stats}.tmp"
                with open(temporary, "w") as handle:
                    json.dump(data, handle)
                os.replace(temporary, _stats)

    threading.Thread(target=_loop, name="bench-gc-hooks", daemon=True).start()
