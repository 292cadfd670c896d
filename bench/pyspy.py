"""py-spy around a benchmark phase: record workers by PID, then summarise where their samples went.

`python -m bench.pyspy FILE.txt [--top N]` prints the summary of a raw (collapsed-stack) py-spy profile.
"""

import argparse
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
_PREFIXES = (".venv/lib/python3.11/site-packages/", "/usr/local/lib/python3.11/", "/usr/lib/python3.11/")


def binary() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, out: Path, duration: int, rate: int = 100, *, native: bool = False) -> subprocess.Popen | None:
    """Start `py-spy record` on `pid`; None without py-spy.

    Python-only sampling is non-blocking (the worker is never paused); `native` adds C frames (where a
    Python frame's "self" time really goes: syscalls, the garbage collector) and pauses it per sample.
    """
    exe = binary()
    if exe is None:
        return None
    args = [exe, "record", "-p", str(pid), "-o", str(out), "--format", "raw", "--duration", str(duration)]
    args += ["--rate", str(rate), "--threads", "--native" if native else "--nonblocking"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _label(frame: str) -> str:
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for prefix in _PREFIXES:
        index = path.find(prefix)
        if index >= 0:
            path = path[index + len(prefix) :]
            break
    else:
        path = path.rpartition("/work/main/")[2]
    return f"{path}:{match['func']}"


def summarise(path: Path, top: int = 15, *, main_thread_only: bool = True) -> dict[str, Any]:
    """Shares of sampled stacks: `self` (the innermost frame) and `inclusive` (anywhere on the stack).

    By default only the main thread counts: it runs the event loop (Daphne, Twisted, the fan-out). The
    thread pool (Django's sync views, ORM calls) is listed in `threads`. Native profiles also sample
    threads that wait on a lock, which is why they are left out of the shares by default.
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        thread, *rest = stack.split(";")
        # "thread (TID): NAME" with --threads; the main thread's TID is the PID, named MainThread.
        name = thread.partition(": ")[2] or thread
        main = name == "MainThread" or (thread.startswith("thread (") and _is_main_tid(thread, path))
        threads["MainThread" if main else "other threads"] += samples
        if main_thread_only and not main:
            continue
        frames = [_label(frame) for frame in rest if frame]
        if not frames:
            continue
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[name, count, round(count / total, 4)] for name, count in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "threads": dict(threads),
        "main_thread_only": main_thread_only,
        "self": shares(own),
        "inclusive": shares(inclusive),
    }


def _is_main_tid(thread: str, path: Path) -> bool:
    # Native profiles name no thread; the file name ends with the worker's PID (see fanout.py).
    tid = thread.removeprefix("thread (").partition(")")[0]
    return path.name.rsplit(".pyspy", 1)[0].endswith(f"-{tid}")


def render(summary: dict[str, Any]) -> str:
    where = "main thread" if summary.get("main_thread_only") else "all threads"
    lines = [f"{summary['samples']} samples of the {where} (samples per thread: {summary.get('threads')})"]
    for kind in ("self", "inclusive"):
        lines.append(f"  top {kind}:")
        lines += [f"    {share * 100:5.1f}%  {count:6d}  {name}" for name, count, share in summary[kind]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--all-threads", action="store_true", help="count every thread, not only the main one")
    args = parser.parse_args()
    print(render(summarise(args.profile, args.top, main_thread_only=not args.all_threads)))


if __name__ == "__main__":
    main()
