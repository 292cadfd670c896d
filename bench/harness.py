"""The one benchmark harness: every scenario (`python -m bench.<name>`) is a `Harness` subclass run by `run()`.

It gives a scenario: a private redis-server (livesite/devredis.py) and Daphne workers on free loopback ports in a
temp dir, with a migrated SQLite file and a staff DRF token (`--rev REV` runs the site as committed at REV: `git
archive` into the temp dir); django-eventstream's peer project from its own virtualenv; SSE client processes
(bench/loadclient.py); an open-loop HTTP sender; /proc readings (CPU, RSS/PSS/USS, fds); percentiles; py-spy
profiles; the JSON report; and signal handling: SIGINT and SIGTERM stop the run, and every process it started is
stopped by PID (also when the run itself dies: PR_SET_PDEATHSIG). Every phase is bounded by the run's --timeout.
"""

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.loadclient import ClientProcess, die_with_parent, raise_nofile_limit
from livesite import devredis

ROOT = Path(__file__).resolve().parents[1]
RESULTS, HOOKS, PEER_DIR = ROOT / "bench/results", ROOT / "bench/sitehooks", ROOT / "bench/peers/eventstream"
PYTHON, DAPHNE = sys.executable, str(Path(sys.executable).with_name("daphne"))
# The ASGI servers a benchmark may run livesite's workers under (`--server`, where a benchmark offers it):
# uvicorn as the README recommends it, without the access log (nginx keeps that).
SERVERS = ("daphne", "uvicorn")
# As deploy/systemd/uvicorn.conf runs it (from 2 December; before, uvicorn's own proxy-header handling was on).
UVICORN = ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--lifespan", "on", "--no-access-log"]
UVICORN += ["--timeout-keep-alive", "75", "--no-proxy-headers"]
CLK_TCK = os.sysconf("SC_CLK_TCK")
EVENT_TYPE = "bench.tick"  # what bench/loadclient.py times: data {"seq", "sent_at"}
MAX_STREAMS_PER_PROCESS = 19_000  # RLIMIT_NOFILE is 20,000 here (hard): room for the process's own files
MAX_STREAMS_PER_SOURCE = 25_000  # ephemeral ports per (source address, destination) are ~28,000
FAILURES = (RuntimeError, subprocess.SubprocessError, OSError, TimeoutError, ConnectionError)
# Its own session (a Ctrl-C in the terminal reaches only us; we stop it in order), and SIGTERM when we die.
DETACHED = {"start_new_session": True, "preexec_fn": die_with_parent}
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")  # a traceback's last line
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")
STAFF_SCRIPT = """
import json, django
django.setup()
from django.core.management import call_command
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
call_command("migrate", verbosity=0)
user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
print(json.dumps({"token": Token.objects.get_or_create(user=user)[0].key, "id": user.pk}))
"""


class BenchError(Exception):
    """The run cannot go on: it stops, and everything it started is stopped."""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14, 15 (1-based)


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS, USS (private) and anonymous memory (KiB) from /proc/PID/smaps_rollup. PSS divides each shared
    page among the processes mapping it, so it moves when others mapping the same files start or stop."""
    keys = {
        "Rss": "rss_kb",
        "Pss": "pss_kb",
        "Private_Clean": "uss_kb",
        "Private_Dirty": "uss_kb",
        "Anonymous": "anon_kb",
    }
    result = dict.fromkeys(("rss_kb", "pss_kb", "uss_kb", "anon_kb"), 0)
    with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/smaps_rollup") as handle:
        for name, _, rest in (line.partition(":") for line in handle):
            if name in keys:
                result[keys[name]] += int(rest.split()[0])
    return result


def kernel_cpu_seconds(pid: int) -> float:
    """System (kernel) CPU of a process from /proc/PID/stat: on loopback, most of a socket write's cost."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    return int(fields[12]) / CLK_TCK


def machine_cpu_seconds() -> float:
    """CPU seconds every process of the machine spent busy so far (all but idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK_TCK


def open_fds(pid: int) -> int:
    with contextlib.suppress(FileNotFoundError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return 0


def sample(pid: int) -> dict[str, Any]:
    """One reading of a process: memory, open files, CPU so far."""
    try:
        cpu = {"cpu_s": cpu_seconds(pid), "sys_s": kernel_cpu_seconds(pid)}
        return {**memory_kb(pid), "fds": open_fds(pid), **cpu, "time": time.time()}
    except (FileNotFoundError, ProcessLookupError):
        return {**memory_kb(0), "fds": 0, "cpu_s": 0.0, "sys_s": 0.0, "time": time.time()}


def percentiles(values: Iterable[float], points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles and the max of `values`, in their unit; None when there are none."""
    ordered, keys = sorted(values), [f"p{point:g}".replace(".", "_") for point in points]
    if not ordered:
        return dict.fromkeys([*keys, "max"])
    ranks = [max(0, math.ceil(point / 100 * len(ordered)) - 1) for point in points]
    return {key: ordered[rank] for key, rank in zip(keys, ranks, strict=True)} | {"max": ordered[-1]}


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:,.1f}"


def pct(values: dict[str, float | None], unit: Callable[[float | None], str] = ms) -> str:
    """'p50 a, p90 b, p99 c, max d' of a percentiles() dict."""
    return ", ".join(f"{key} {unit(values[key])}" for key in ("p50", "p90", "p99", "max") if key in values)


def num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def mib(kb: float) -> str:
    return f"{kb / 1024:,.1f}"


def kib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} KiB"


def cpu_deltas(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """CPU seconds per process between two snapshots, `others`: the rest of the machine (other engineers), and
    `wall_s`: the time between them."""
    names = [n for n in end if n != "machine" and n in start and None not in (start[n]["cpu_s"], end[n]["cpu_s"])]
    ours = {name: round(end[name]["cpu_s"] - start[name]["cpu_s"], 3) for name in names}
    machine, wall = (
        end["machine"]["cpu_s"] - start["machine"]["cpu_s"],
        end["machine"]["time"] - start["machine"]["time"],
    )
    return {**ours, "others": round(max(0.0, machine - sum(ours.values())), 3), "wall_s": round(wall, 3)}


def cpu_split(values: dict[str, float]) -> tuple[float, float]:
    """(server, client) CPU seconds of a cpu_deltas() dict: client processes and this one (`bench`: it publishes
    and reads stats) are the client, every other process a server."""
    client = sum(value for name, value in values.items() if name.startswith("client") or name == "bench")
    return sum(value for name, value in values.items() if name not in ("others", "wall_s")) - client, client


def worker_cpu(values: dict[str, float]) -> float:
    """CPU seconds of the Daphne workers (w0, d0, dc1-w0, ...) in a cpu_deltas() dict."""
    return sum(value for name, value in values.items() if re.fullmatch(r"(dc\d+-)?[wd]\d+", name))


def cpu_line(values: dict[str, float], cores: int) -> str:
    """'server X s, client Y s over Z s wall (N % of 2 cores; others W s): per process' of a cpu_deltas() dict."""
    (server, client), wall = cpu_split(values), values.get("wall_s", 0.0)
    parts = ", ".join(f"{name} {value:.1f}" for name, value in values.items() if name not in ("others", "wall_s"))
    busy = (server + client) / wall / cores * 100 if wall > 0 else 0.0
    return (
        f"server {server:.1f} s, client {client:.1f} s over {wall:.1f} s wall ({busy:.0f} % of {cores} cores; "
        f"other processes on the machine {values.get('others', 0.0):.1f} s): {parts}"
    )


def load_line(report: dict[str, Any]) -> str:
    return " -> ".join(" / ".join(f"{v:.2f}" for v in report[key]) for key in ("loadavg_start", "loadavg_end"))


def uptime() -> str:
    """`uptime`'s own line, as the docs quote it."""
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def machine_info() -> dict[str, Any]:
    """The machine and the code: cores, memory, kernel, Python, git commit, files changed, date."""
    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=ROOT).stdout

    diff = git("diff", "HEAD", "--", "realtime", "livesite")  # uncommitted site changes, named by a hash
    info = {"cpus": os.cpu_count(), "nproc": len(os.sched_getaffinity(0)), "mem_gib": round(total_kb / 1024**2, 1)}
    info |= {"kernel": platform.release(), "python": platform.python_version()}
    info["git_commit"] = git("rev-parse", "HEAD").strip()
    info["git_dirty_files"] = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    info["site_diff_sha256"] = hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else None
    info |= {"nofile": raise_nofile_limit(), "date": datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y")}
    return info


def code_label(report: dict[str, Any]) -> str:
    """The commit the workers ran; for the working tree, also the hash of its uncommitted site diff, if any."""
    code, diff = report["code"], report["machine"].get("site_diff_sha256")
    label = f"{code.get('rev')} {str(code.get('commit', ''))[:10]}"
    if code.get("rev") == "working tree" and diff:
        label += f" + uncommitted changes to realtime/ or livesite/ (diff sha256 {diff})"
    return label


def write_report(report: dict[str, Any], directory: Path) -> Path:
    """Write `report` as JSON to `directory` (made if needed) as <config name>-<stamp>.json."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{report['config']['name']}-{report['stamp']}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def add_common_options(parser: argparse.ArgumentParser, name: str, timeout: float, *, rev: bool = True) -> None:
    """--timeout, --name, --rev, --results-dir, --keep-tmp, --no-uvloop: the same in every scenario."""
    parser.add_argument("--timeout", type=float, default=timeout, help=f"bound of the whole run, s ({timeout:g})")
    parser.add_argument("--name", default="", help=f"results name (default {name})")
    if rev:
        parser.add_argument("--rev", default="", help="run the site as committed at this git revision (default: tree)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, database)")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio loop in the client processes")


def streams_and_sources(parser: argparse.ArgumentParser, args: argparse.Namespace, streams: int, workers: int) -> None:
    """Default and check --clients (19,000 streams per process) and --sources (25,000 per source and worker)."""
    per_worker = math.ceil(streams / workers)
    if per_worker > MAX_STREAMS_PER_PROCESS:
        parser.error(f"at most {MAX_STREAMS_PER_PROCESS:,} streams per worker (20,000 open files): raise --workers")
    args.clients = args.clients or math.ceil(streams / MAX_STREAMS_PER_PROCESS)
    if math.ceil(streams / args.clients) > MAX_STREAMS_PER_PROCESS:
        parser.error(f"at most {MAX_STREAMS_PER_PROCESS:,} streams per client process: raise --clients")
    needed = math.ceil(per_worker / MAX_STREAMS_PER_SOURCE)
    args.sources = args.sources or max(needed, args.clients)
    if not needed <= args.sources <= 254:
        parser.error(f"--sources must be within {needed}..254 (ephemeral ports per source and worker)")


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client: one request at a time; Content-Length or chunked; JSON in and out."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port, self.headers = port, headers or {}
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, method: str, path: str, payload: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """(status, decoded JSON body or raw bytes). Reconnects once if the peer had closed the connection."""
        body = b"" if payload is None else json.dumps(payload, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", f"Content-Length: {len(body)}"]
        head += ["Content-Type: application/json"] if payload is not None else []
        raw = ("\r\n".join(head + [f"{k}: {v}" for k, v in self.headers.items()]) + "\r\n\r\n").encode() + body
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    connecting = asyncio.open_connection("127.0.0.1", self.port)
                    self.reader, self.writer = await asyncio.wait_for(connecting, timeout)
                self.writer.write(raw)
                return await asyncio.wait_for(self._response(), timeout)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                self.close()
                if attempt == 2:
                    raise ConnectionError(f"{method} {path}: {exc!r}") from exc
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, Any]:
        assert self.reader is not None
        lines = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines[1:])}
        if "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readexactly(2)  # the last chunk's CRLF
            data = b"".join(parts)
        else:
            data = await self.reader.read()
            self.close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        json_body = headers.get("content-type", "").startswith("application/json")
        return int(lines[0].split(" ", 2)[1]), json.loads(data) if json_body else data


def pyspy_binary() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start_pyspy(
    pid: int, out: Path, seconds: int, *, native: bool = False, gil: bool = False, threads: bool = True
) -> subprocess.Popen:
    """`py-spy record` on `pid` (raw collapsed stacks, 100 Hz). Python-only sampling never pauses the process;
    `native` adds C frames (syscalls, the garbage collector) and pauses it per sample. `gil` samples only the thread
    holding the GIL (shares of the interpreter's busy time; without `threads`, the only mode that keeps up with
    thousands of threads, as in the peer's workers)."""
    args = [str(pyspy_binary()), "record", "-p", str(pid), "-o", str(out), "--format", "raw", "--rate", "100"]
    args += ["--duration", str(seconds), "--native" if native else "--nonblocking"]
    args += (["--threads"] if threads else []) + (["--gil"] if gil else [])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def dump_stack(pid: int) -> str:
    """`py-spy dump` of a process (what its threads are doing now), or why there is none."""
    if (binary := pyspy_binary()) is None:
        return "(py-spy is not installed)"
    try:
        dump = subprocess.run([binary, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "(py-spy dump timed out)"
    return (dump.stdout or dump.stderr)[-3000:]


def frame_label(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'path/to/file.py:func', paths relative to site-packages or the repo."""
    if (match := _FRAME.match(frame)) is None:
        return frame
    path = match["file"]
    for prefix in ("site-packages/", "/usr/local/lib/python3.11/", "/usr/lib/python3.11/", f"{ROOT}/", "/src/"):
        if prefix in path:
            path = path.rpartition(prefix)[2]
            break
    return f"{path}:{match['func']}"


def profile_stacks(path: Path) -> Iterable[tuple[str, list[str], int]]:
    """(thread, frame labels outermost first, samples) per line of a raw py-spy profile."""
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            thread, *frames = stack.split(";")
            yield thread, [frame_label(frame) for frame in frames if frame], int(count)


def summarise_profile(path: Path, top: int = 15, *, main_thread_only: bool = True) -> dict[str, Any]:
    """Shares of sampled stacks: `self` (innermost frame) and `inclusive` (anywhere on the stack). By default only
    the main thread counts (the event loop: Daphne, Twisted, the fan-out); the thread pool (Django's sync views,
    the ORM) is counted in `threads`. The main thread is named MainThread, or in a native profile (no names) its
    id is the PID at the end of the file name."""
    own, inclusive, threads = Counter[str](), Counter[str](), Counter[str]()
    for thread, frames, samples in profile_stacks(path):
        tid = thread.removeprefix("thread (").partition(")")[0]
        main = thread.endswith(": MainThread") or path.name.rsplit(".pyspy", 1)[0].endswith(f"-{tid}")
        threads["MainThread" if main else "other threads"] += samples
        if frames and (main or not main_thread_only):
            own[frames[-1]] += samples
            inclusive.update(dict.fromkeys(frames, samples))
    total = own.total()
    shares = {
        kind: [[name, n, round(n / total, 4)] for name, n in c.most_common(top)]
        for kind, c in [("self", own), ("inclusive", inclusive)]
    }
    return {"samples": total, "threads": dict(threads), "main_thread_only": main_thread_only, **shares}


def render_profile(summary: dict[str, Any]) -> str:
    where = "the main thread" if summary.get("main_thread_only") else "all threads"
    lines = [f"{summary['samples']} samples of {where} (samples per thread: {summary.get('threads')})"]
    for kind in ("self", "inclusive"):
        lines += [f"  top {kind}:", *(f"    {share * 100:5.1f}%  {n:6d}  {name}" for name, n, share in summary[kind])]
    return "\n".join(lines)


def ensure_peer_venv(timeout: float = 600.0) -> dict[str, Any]:
    """Create bench/peers/eventstream/.venv from its pinned requirements if missing or stale (a stamp holds the
    requirements' hash); what it holds. Our own requirements stay untouched."""
    venv, requirements = PEER_DIR / ".venv", PEER_DIR / "requirements.txt"
    python, stamp = venv / "bin" / "python", venv / ".bench-requirements.sha256"
    wanted = hashlib.sha256(requirements.read_bytes()).hexdigest()
    if (stamp.read_text().strip() if stamp.exists() else "") != wanted or not (venv / "bin" / "daphne").exists():
        print(f"setting up the peer's virtualenv {venv} (pip install -r {requirements.name}) ...", file=sys.stderr)
        if not python.exists():
            subprocess.run([shutil.which("python3") or PYTHON, "-m", "venv", str(venv)], check=True, timeout=timeout)
        install = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(requirements)]
        result = subprocess.run(install, capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"pip install for the peer failed:\n{result.stderr[-3000:]}")
        stamp.write_text(wanted + "\n")

    def ask(*args: str) -> str:
        return subprocess.run([str(python), *args], capture_output=True, text=True, check=True, timeout=60).stdout

    names = ("django-eventstream", "django", "daphne", "redis", "twisted")
    lines = (line.partition("==") for line in ask("-m", "pip", "freeze", "--disable-pip-version-check").split())
    packages = {name: version for name, _, version in lines if name.lower() in names}
    version = ask("-c", "import platform; print(platform.python_version())").strip()
    return {"venv": str(venv), "python": version, "packages": packages}


@dataclass
class Managed:
    """A server process this run started: stopped by its PID, SIGTERM then SIGKILL."""

    name: str
    process: subprocess.Popen
    port: int = 0
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        devredis.stop_process(self.process, timeout)

    def log_problems(self) -> list[str]:
        """Lines of its log that report an error (for the JSON, and to print on failure)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if " ERROR " in line or " CRITICAL " in line or _EXCEPTION_LINE.match(line)]


def wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


class Harness:
    """One run: its servers, client processes and profilers, its deadline, its report. Subclasses write main().
    `target` is "livesite" or "eventstream" (the peer): the stream, publish and stats requests follow it."""

    def __init__(self, args: argparse.Namespace, prefix: str = "bench-") -> None:
        self.args, self.deadline = args, time.monotonic() + args.timeout
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.target = getattr(args, "target", "livesite")
        self.redis: list[Managed] = []
        self.workers: list[Managed] = []
        self.clients: list[ClientProcess] = []
        self.profilers: list[subprocess.Popen] = []
        self.root: Path | None = None
        self.token, self.secret = "", secrets.token_hex(16)  # the staff token; the peer's publish secret
        config = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
        self.report: dict[str, Any] = {"stamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"), "machine": machine_info()}
        self.report |= {"config": config, "uptime_start": uptime(), "loadavg_start": os.getloadavg()}
        self.report["date"] = self.report["machine"]["date"]

    @property
    def peer(self) -> bool:
        return self.target == "eventstream"

    def remaining(self, cap: float | None = None) -> float:
        if (left := self.deadline - time.monotonic()) <= 0:
            raise BenchError(f"the run passed its --timeout of {self.args.timeout:.0f}s")
        return left if cap is None else min(left, cap)

    async def main(self) -> dict[str, Any]:
        raise NotImplementedError

    def spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path, port: int = 0) -> Managed:
        log_path = self.tmp / f"{name}-{port}.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(args, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, **DETACHED)
        return Managed(name, process, port, log_path)

    def start_redis(self, name: str = "redis") -> Managed:
        (directory := self.tmp / name).mkdir()
        log_path = self.tmp / f"{name}.log"
        server = devredis.start(directory=directory, log_path=log_path, timeout=self.remaining(30), **DETACHED)
        self.redis.append(Managed(name, server.process, server.port, log_path))
        return self.redis[-1]

    def site_root(self) -> Path:
        """The site's source: the working tree, or with --rev the commit exported (once) into the temp dir."""
        if self.root is None:
            self.root, self.code = ROOT, {"rev": "working tree", "commit": self.report["machine"]["git_commit"]}
            if rev := getattr(self.args, "rev", ""):
                git = ["git", "-C", str(ROOT)]
                verify = [*git, "rev-parse", "--verify", f"{rev}^{{commit}}"]
                commit = subprocess.run(verify, capture_output=True, text=True, check=True).stdout.strip()
                archive = subprocess.run([*git, "archive", "--format=tar", commit], capture_output=True, check=True)
                (root := self.tmp / "src").mkdir()
                subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
                self.root, self.code = root, {"rev": rev, "commit": commit}
        self.report["code"] = self.code
        return self.root

    def site_env(self, redis: Managed, **overrides: str) -> dict[str, str]:
        """The workers' environment: ours without any livesite knob, then the benchmark's own."""
        prefixes = ("REALTIME_", "PRESENCE_", "LIKES_", "REDIS_", "DATABASE_", "DJANGO_", "PYTHONPATH")
        env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
        env |= {
            "PYTHONPATH": str(self.site_root()),
            "DJANGO_SETTINGS_MODULE": "livesite.settings",
            "LOG_LEVEL": "WARNING",
            # The benchmarks publish to bench.* through the publish API (realtime.policies: deny by default).
            "REALTIME_OPEN_NAMESPACES": "bench",
            # A benchmark is a flood from one address by design: the limits are measured elsewhere.
            "REALTIME_RATE_LIMITS": "connect=0,subscribe=0,publish=0,like=0,comment=0,sign_in=0",
            # Thousands of streams from 127.0.0.1: no cap on streams per address or member (realtime.caps).
            "REALTIME_MAX_STREAMS_PER_ADDRESS": "0",
            "REALTIME_MAX_STREAMS_PER_MEMBER": "0",
        }
        env |= {
            "DATABASE_URL": f"sqlite:///{self.tmp / 'db.sqlite3'}",
            "REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
        }
        return env | {"PYTHONUNBUFFERED": "1"} | overrides

    async def django(self, env: dict[str, str], script: str, *args: str) -> Any:
        """Run a Python script in the site (it sets Django up); the JSON of its last output line."""
        command = [PYTHON, "-c", script, *args]
        run = {"cwd": self.site_root(), "env": env, "capture_output": True, "text": True, "timeout": self.remaining()}
        result = await asyncio.to_thread(subprocess.run, command, check=False, **run)
        if result.returncode != 0:
            raise BenchError(f"a Django script in {self.site_root()} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    async def prepare_site(self, env: dict[str, str]) -> None:
        """Migrate the database; a staff user with a DRF token (self.token)."""
        self.token = (await self.django(env, STAFF_SCRIPT))["token"]

    def start_workers(
        self,
        count: int,
        env: dict[str, str],
        *,
        names: list[str] | None = None,
        ports: list[int] | None = None,
        backlog: int = 0,
    ) -> list[Managed]:
        """`count` workers of the target on free ports (or `ports`), named `names` (default w0, w1, ...): livesite
        (`python -m livesite.serve`, or Daphne where the revision has no such entry point) or the peer's Daphne.
        `backlog`: listen with this accept queue instead of the server's default (Twisted's is 50).
        A benchmark's `--server uvicorn` runs livesite under uvicorn instead (UVICORN), and its `--access-log off`
        runs Daphne with `-v 0`."""
        uvicorn = getattr(self.args, "server", "daphne") == "uvicorn" and not self.peer
        if self.peer:
            cwd, command, app = PEER_DIR, [str(PEER_DIR / ".venv" / "bin" / "daphne")], "peersite.asgi:application"
        elif uvicorn:
            cwd, command, app = self.site_root(), [PYTHON, *UVICORN], "livesite.asgi:application"
        else:
            cwd, app = self.site_root(), "livesite.asgi:application"
            command = [PYTHON, "-m", "livesite.serve"] if (cwd / "livesite" / "serve.py").exists() else [DAPHNE]
            if getattr(self.args, "access_log", "on") == "off":
                command.extend(["-v", "0"])
        started = []
        for index in range(count):
            port = ports[index] if ports else devredis.free_port()
            name = names[index] if names else f"w{index}"
            gc = {"BENCH_GC_STATS": str(self.tmp / f"gc-{name}.json")} if "BENCH_GC_STATS" in env else {}
            if uvicorn:
                listen = ["--host", "127.0.0.1", "--port", str(port), *(["--backlog", str(backlog)] if backlog else [])]
            elif backlog:
                listen = ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog={backlog}"]
            else:
                listen = ["-b", "127.0.0.1", "-p", str(port)]
            started.append(self.spawn(name, [*command, *listen, app], env | gc, cwd, port))
            started[-1].info["gc_stats"] = gc.get("BENCH_GC_STATS")
        for worker in started:
            wait_for_port(worker.port, worker.process, self.deadline)
        self.workers += started
        return started

    async def start_site(self, count: int, names: list[str] | None = None, **overrides: str) -> None:
        """`count` workers of the target on this run's redis-server (started if none): livesite on a prepared site
        (with env `overrides`), or the peer from its virtualenv."""
        redis = self.redis[0] if self.redis else self.start_redis()
        if self.peer:
            info = await asyncio.to_thread(ensure_peer_venv, self.remaining())
            self.report["code"] = {"rev": "django-eventstream peer (bench/peers/eventstream)", **info}
            prefixes = ("PEER_", "DJANGO_", "PYTHON", "VIRTUAL_ENV", "REDIS_")
            env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
            env |= {"PYTHONPATH": str(PEER_DIR), "DJANGO_SETTINGS_MODULE": "peersite.settings", "PEER_REDIS_DB": "0"}
            env |= {"PEER_REDIS_HOST": "127.0.0.1", "PEER_REDIS_PORT": str(redis.port), "PYTHONUNBUFFERED": "1"}
            env |= {"PEER_PUBLISH_SECRET": self.secret, "PEER_LOG_LEVEL": "WARNING"}
        else:
            env = self.site_env(redis, **overrides)
            await self.prepare_site(env)
        self.start_workers(count, env, names=names)

    def check_alive(self) -> None:
        for managed in [*self.workers, *self.redis]:
            if managed.process.poll() is not None:
                problems = "\n".join(managed.log_problems()[-5:])
                raise BenchError(f"{managed.name} exited with {managed.process.returncode}\n{problems}")

    def http(self, worker: Managed, token: str = "") -> HttpConnection:
        if self.peer:
            return HttpConnection(worker.port, {"X-Bench-Secret": self.secret})
        return HttpConnection(worker.port, {"Authorization": f"Token {token or self.token}"})

    async def call(self, worker: Managed, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        """One request on a fresh connection; its body. BenchError unless it answers `expect`."""
        connection = self.http(worker)
        try:
            status, answer = await connection.request(method, path, body, timeout=self.remaining(30))
        finally:
            connection.close()
        if status != expect:
            raise BenchError(f"{method} {path} on {worker.name}: {status} {answer!r}")
        return answer

    async def stats(self, workers: list[Managed] | None = None) -> dict[str, dict[str, Any]]:
        """Each worker's /realtime/stats (the peer's /stats), by name."""
        path = "/stats" if self.peer else "/realtime/stats"
        return {worker.name: await self.call(worker, "GET", path) for worker in workers or self.workers}

    def publish_request(self, topic: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of one publish of a `bench.tick`; livesite and the peer both answer 202."""
        if self.peer:
            return "/publish", {"channel": topic, "type": EVENT_TYPE, "data": data}
        return "/api/publish", {"topic": topic, "type": EVENT_TYPE, "data": data}

    def stream_request(self, topics: list[str]) -> bytes:
        path = f"/events/?channel={topics[0]}" if self.peer else f"/realtime/connect?topics={','.join(topics)}"
        headers = "Host: 127.0.0.1\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
        return f"GET {path} HTTP/1.1\r\n{headers}\r\n".encode()

    async def warm_up(self, workers: list[Managed] | None = None, publishes: int = 3, streams: bool = False) -> None:
        """Per worker: one stream opened and closed (with `streams`), `publishes` publishes; then the stats. What
        these load (the realtime Worker, the publish path, the peer's Redis listener) is then in the baseline."""
        for worker in workers or self.workers:
            if streams:
                await self.touch_stream(worker)
            for _ in range(publishes):
                await self.call(worker, "POST", *self.publish_request("bench.warmup", {"seq": -1, "sent_at": 0}), 202)
        await asyncio.sleep(0.5 if streams else 0)  # the workers see the disconnects
        await self.stats()

    async def touch_stream(self, worker: Managed) -> None:
        """Open one stream, read up to `connected` (the peer: its first body bytes), close it."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", worker.port), self.remaining(10))
        try:
            writer.write(self.stream_request(["bench.warmup"]))
            seen, limit = b"", time.monotonic() + self.remaining(20)
            while True:
                head, sep, body = seen.partition(b"\r\n\r\n")
                if sep and b" 200 " not in head.partition(b"\r\n")[0] + b" ":
                    raise BenchError(f"warm-up stream on {worker.name}: {head[:200]!r}")
                if sep and (body if self.peer else b"event: connected" in body):
                    return
                if not (chunk := await asyncio.wait_for(reader.read(65536), max(0.1, limit - time.monotonic()))):
                    raise BenchError(f"{worker.name} closed the warm-up stream: {seen[:300]!r}")
                seen += chunk
        finally:
            writer.close()

    @staticmethod
    def spread(
        workers: list[Managed], streams: int, clients: int, sources: int, request: Callable[[int], bytes] | None = None
    ) -> list[list[tuple]]:
        """(port, source[, request(i)]) of each stream, per client process: stream i goes to worker i mod W; the
        client process and source address rotate over consecutive rounds of W streams. Spreading fewer streams
        gives a prefix of each client's share."""
        shares: list[list[tuple]] = [[] for _ in range(clients)]
        for index in range(streams):
            lap = index // len(workers)
            target = (workers[index % len(workers)].port, f"127.0.0.{lap % sources + 1}")
            shares[lap % clients].append(target if request is None else (*target, request(index)))
        return shares

    async def start_clients(self, shares: list[list[tuple]], request: bytes = b"", **config: Any) -> None:
        """One client process per share of targets; returns once each said it is ready (not yet connected).
        `config` may set names (one per share), concurrency (streams opened at once, in all), connect_timeout,
        watch_types."""
        names = config.pop("names", None) or [f"client{index}" for index in range(len(shares))]
        base = {"request": request, "concurrency": max(1, config.pop("concurrency", 100) // len(shares))}
        base |= {"connect_timeout": 30.0, "deadline": time.time() + self.remaining()}
        base |= {"uvloop": not getattr(self.args, "no_uvloop", False), "ready_on": "first-bytes" if self.peer else ""}
        for share, name in zip(shares, names, strict=True):
            self.clients.append(ClientProcess({**base, **config, "targets": share}, name))
        for client in self.clients:
            if (reply := await client.recv(self.remaining(60)))[0] != "ready":
                raise BenchError(f"{client.name} said {reply[0]!r} instead of 'ready'")

    async def open_streams(
        self, shares: list[list[tuple]], request: bytes = b"", progress: Callable[[], None] | None = None, **config: Any
    ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """Start the client processes (start_clients), read the baseline, open every stream, read again after
        --settle: (the connect summary, snapshots "baseline", "connected" and "after_connect"). The baseline is
        read with the client processes alive: PSS divides shared pages among the processes mapping them."""
        await self.start_clients(shares, request, **config)
        await asyncio.sleep(self.args.settle)
        self.check_alive()
        samples, requested = {"baseline": self.snapshot()}, sum(map(len, shares))
        workers = len({target[0] for share in shares for target in share})
        print(f"opening {requested:,} streams over {workers} workers ...", file=sys.stderr)
        results = await self.connect(config.get("connect_timeout", 30) + requested / 50, progress)
        if not (connect := self.connect_summary(results, requested))["held"]:
            raise BenchError(f"no stream connected: {connect['errors']}")
        samples["connected"] = self.snapshot()
        await asyncio.sleep(self.args.settle)
        self.check_alive()
        return connect, samples | {"after_connect": self.snapshot()}

    async def ask_all(self, command: tuple, timeout: float) -> list[Any]:
        """Send `command` to every client process; their answers' payloads, in order."""
        for client in self.clients:
            client.pipe.send(command)
        replies = []
        for client in self.clients:
            try:
                replies.append(await client.recv(self.remaining(timeout)))
            except TimeoutError as exc:
                # Say what it was doing: a load client that cannot answer is a result too (saturated, stuck).
                raise TimeoutError(f"{exc} to {command[0]!r}; its stack:\n{dump_stack(client.pid)}") from None
        return [reply[1] if len(reply) > 1 else None for reply in replies]

    async def connect(self, budget: float, progress: Callable[[], None] | None = None) -> list[dict[str, Any]]:
        """Every client opens its streams; their reports once all are open or failed (workers checked each s)."""
        for client in self.clients:
            client.pipe.send(("connect",))
        tasks = [asyncio.ensure_future(client.recv(self.remaining(budget))) for client in self.clients]
        try:
            while True:
                done, pending = await asyncio.wait(tasks, timeout=1.0)
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()
                if not pending:
                    return [task.result()[1] for task in tasks]
                self.check_alive()
                if progress is not None:
                    progress()
        finally:
            for task in tasks:
                task.cancel()

    @staticmethod
    def connect_summary(results: list[dict[str, Any]], requested: int) -> dict[str, Any]:
        errors, connect_secs = Counter[str](), array("d")
        for result in results:
            errors.update(result["errors"])
            connect_secs.frombytes(result["connect_secs"])
        held = sum(result["held"] for result in results)
        wall = max(result["ended"] for result in results) - min(result["started"] for result in results)
        summary = {"requested": requested, "held_per_client": [result["held"] for result in results], "held": held}
        summary |= {"failed": sum(result["failed"] for result in results), "errors": dict(errors), "wall_s": wall}
        return summary | {
            "rate_per_s": held / wall if wall > 0 else None,
            "time_to_connected_s": percentiles(connect_secs),
        }

    async def drain(self, done: Callable[[list[dict[str, Any]]], bool], limit: float) -> dict[str, Any]:
        """Poll the clients' status until done(statuses) or `limit` seconds passed."""
        started = time.monotonic()
        while True:
            statuses = await self.ask_all(("status",), 60)
            if (complete := done(statuses)) or time.monotonic() - started > limit:
                received = sum(status["received"] for status in statuses)
                return {"received": received, "complete": complete, "waited_s": time.monotonic() - started}
            await asyncio.sleep(min(0.1, self.remaining()))

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """/proc readings of every process of the run by name (`bench` is this one), and the machine's CPU."""
        pids = {managed.name: managed.pid for managed in [*self.workers, *self.redis]}
        pids |= {client.name: client.pid for client in self.clients} | {"bench": os.getpid()}
        readings = {name: sample(pid) for name, pid in pids.items()}
        return readings | {"machine": {"cpu_s": machine_cpu_seconds(), "time": time.time()}}

    def finish(self) -> None:
        """The report's closing fields: load at the end, `uptime`, the servers' log problems."""
        self.report |= {"loadavg_end": os.getloadavg(), "uptime_end": uptime()}
        managed = [*self.workers, *self.redis]
        self.report["log_problems"] = {m.name: m.log_problems()[-20:] for m in managed if m.log_problems()}

    async def send_paced(
        self,
        count: int,
        rate: float,
        connections: list[HttpConnection],
        send: Callable[[int, HttpConnection], Awaitable[int]],
        *,
        accept: int = 202,
        give_up: float = 0.0,
        size: Callable[[int], int] = lambda item: 1,
    ) -> dict[str, Any]:
        """Open loop: item i is due at start + i / rate (rate inf: back to back, as connections come free) and goes
        on the next free keep-alive connection; send(i, connection) makes the request and returns its status.
        With `give_up` (seconds), items not sent by then are dropped; else the run's deadline bounds it. Statuses
        count size(i) each."""
        loop = asyncio.get_running_loop()
        pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for connection in connections:
            pool.put_nowait(connection)
        sent_at, post_s, statuses = [0.0] * count, [0.0] * count, Counter[str]()

        async def one(item: int, connection: HttpConnection) -> None:
            sent_at[item] = now = time.time()
            try:
                statuses[str(await send(item, connection))] += size(item)
            except (OSError, TimeoutError) as exc:
                statuses[type(exc).__name__] += size(item)
            finally:
                post_s[item] = time.time() - now
                pool.put_nowait(connection)

        tasks: list[asyncio.Task] = []
        # Pacing runs on the loop's monotonic clock; what the report shows is wall-clock time (time.time), the
        # clock every sent_at and receive time uses: each duration is taken on one clock only.
        start = loop.time() + 0.05
        start_wall = time.time() + 0.05
        try:
            for item in range(count):
                if (delay := start + item / rate - loop.time()) > 0:
                    await asyncio.sleep(min(delay, self.remaining()))
                try:
                    wait = start + give_up - loop.time() if give_up else self.remaining(30)
                    connection = await asyncio.wait_for(pool.get(), max(0.0, wait))
                except TimeoutError:
                    if not give_up:
                        raise
                    break
                if give_up and loop.time() > start + give_up:
                    break
                tasks.append(asyncio.create_task(one(item, connection)))
            send_secs = time.time() - start_wall  # due time of the first item -> the last one handed out
            await asyncio.wait_for(asyncio.gather(*tasks), self.remaining(60))
        finally:
            for task in tasks:
                task.cancel()
            for connection in connections:
                connection.close()
        sent = len(tasks)
        first, last = min(sent_at[:sent], default=0), max(sent_at[:sent], default=0)
        answered, accepted = max((sent_at[i] + post_s[i] for i in range(sent)), default=0), statuses[str(accept)]
        result = {"events": count, "sent": sent, "rate_target": rate, "statuses": dict(statuses), "accepted": accepted}
        result |= {"rate_achieved": (sent - 1) / (last - first) if last > first else None, "sent_at": sent_at}
        result |= {"post_latency_s": percentiles(post_s[:sent]), "first_sent": first, "send_secs": send_secs}
        result |= {"last_answer": answered, "wall_s": answered - first}
        return result | {"per_s": accepted / (answered - first) if answered > first else None}

    def gc_snapshot(self) -> dict[str, Any]:
        """The collections counted by bench/sitehooks in workers run with --worker-gc-stats."""
        result = {}
        for worker in self.workers:
            with contextlib.suppress(TypeError, OSError, ValueError), open(worker.info.get("gc_stats")) as handle:
                result[worker.name] = json.load(handle)
        return result

    async def broadcast_step(self, topic: str, events: int, rate: float, held: int, profile: int = 0) -> dict:
        """Publish `events` `bench.tick` events to `topic` at `rate` per second, round-robin over the workers on
        --publish-concurrency connections, and wait (at most --drain s) until the `held` streams have them all
        (bench/fanout.py and bench/sidebyside.py). Returns the publish and drain results, the /proc readings before
        and after, the workers' stats, GC collections (with --worker-gc-stats), py-spy summaries with `profile` s."""
        args = self.args
        await self.ask_all(("expect", events), 30)
        print(f"publishing {events} events at {rate:g}/s to {held} streams ...", file=sys.stderr)
        native = getattr(args, "profile_native", False)
        options = {"native": native, "gil": self.peer, "threads": not self.peer}
        profiles = self.start_profiles(self.workers, profile, **options) if profile else []
        connections = [self.http(self.workers[i % len(self.workers)]) for i in range(args.publish_concurrency)]
        padding = {"pad": "x" * args.payload_bytes} if args.payload_bytes else {}
        gc_before, before = self.gc_snapshot(), self.snapshot()

        async def send(seq: int, connection: HttpConnection) -> int:
            path, body = self.publish_request(topic, {"seq": seq, "sent_at": time.time(), **padding})
            return (await connection.request("POST", path, body, timeout=10))[0]

        publish = await self.send_paced(events, rate, connections, send)
        expected = held * publish["accepted"]
        drain = await self.drain(lambda statuses: sum(s["received"] for s in statuses) >= expected, args.drain)
        after = self.snapshot()
        if getattr(args, "worker_gc_stats", False):
            await asyncio.sleep(1.1)  # the hooks write their counters every second
        step = {"publish": publish, "drain": drain, "before_publish": before, "after_publish": after}
        step |= {"gc": gc_deltas(gc_before, self.gc_snapshot()), "stats": await self.stats()}
        step["loadavg_end"] = os.getloadavg()
        if profiles:
            summarise = lambda path: summarise_profile(path, main_thread_only=not self.peer)  # noqa: E731
            step["profiles"] = await self.finish_profiles(profiles, summarise)
        return step

    def start_profiles(self, workers: list[Managed], seconds: int, tag: str = "", **options: Any) -> list[dict]:
        """py-spy on each of `workers` for `seconds` (start_pyspy's options), into --results-dir."""
        if pyspy_binary() is None:
            print("py-spy is not installed: no profile (.venv/bin/pip install py-spy)", file=sys.stderr)
            return []
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        outputs = []
        for worker in workers:
            path = (
                self.args.results_dir
                / f"{self.args.name}-{self.report['stamp']}{tag}-{worker.name}-{worker.pid}.pyspy.txt"
            )
            self.profilers.append(start_pyspy(worker.pid, path, seconds, **options))
            outputs.append({"worker": worker.name, "path": path, "process": self.profilers[-1], "seconds": seconds})
        return outputs

    async def finish_profiles(
        self, outputs: list[dict], summarise: Callable[[Path], dict] = summarise_profile, stop: bool = False
    ) -> list[dict[str, Any]]:
        """Wait for each profiler (with `stop`, SIGINT first: py-spy then writes what it has); their summaries."""
        summaries = []
        for output in outputs:
            process, path = output["process"], output["path"]
            if stop:
                process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), self.remaining(output["seconds"] + 30))
            except TimeoutError:
                process.kill()
            if path.exists() and path.stat().st_size:
                summaries.append({"worker": output["worker"], "path": str(path), **summarise(path)})
            else:
                error = process.stderr.read().decode(errors="replace")[-500:] if process.stderr else ""
                summaries.append({"worker": output["worker"], "error": f"py-spy exited {process.returncode}: {error}"})
        return summaries

    def stop_processes(self, keep_redis: bool = False) -> None:
        """Stop what this run started, by PID: profilers, client processes, workers, then redis."""
        for process in self.profilers:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
        for client in self.clients:
            client.stop()
        for managed in [*self.workers, *([] if keep_redis else self.redis)]:
            with contextlib.suppress(Exception):
                managed.stop()
        self.profilers, self.clients, self.workers, self.redis = [], [], [], self.redis if keep_redis else []

    def cleanup(self) -> None:
        self.stop_processes()
        if self.args.keep_tmp:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def report_failure(self, exc: BaseException) -> None:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        for client in self.clients:
            client.process.join(timeout=2)
            if not client.process.is_alive():
                print(f"  {client.name} exited with {client.process.exitcode}", file=sys.stderr)
        for managed in [*self.workers, *self.redis]:
            for line in managed.log_problems()[-10:]:
                print(f"  {managed.name}: {line}", file=sys.stderr)


def gc_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Collections per generation, and seconds spent in them, between two gc_snapshot()s."""
    return {
        name: {
            "collections": [e - s for s, e in zip(before[name]["counts"], end["counts"], strict=True)],
            "seconds": [round(e - s, 3) for s, e in zip(before[name]["seconds"], end["seconds"], strict=True)],
            "threshold": end["threshold"],
        }
        for name, end in after.items()
        if before.get(name)
    }


def deliveries(results: list[dict[str, Any]], published: dict[str, Any], held: int, events: int) -> dict[str, Any]:
    """What the streams of one step received: losses, latency percentiles, per-event completion (broadcasts)."""
    counts, first, last = [0] * events, [math.inf] * events, [0.0] * events
    lat_sent, lat_published = array("d"), array("d")
    for result in results:
        columns = zip(result["counts"], array("d", result["first"]), array("d", result["last"]), strict=True)
        for seq, (count, begin, end) in enumerate(columns):
            counts[seq], first[seq], last[seq] = (
                counts[seq] + count,
                min(first[seq], begin or math.inf),
                max(last[seq], end),
            )
        lat_sent.frombytes(result["lat_sent"])
        lat_published.frombytes(result["lat_published"])
    sent_at, received, expected = published["sent_at"], sum(counts), held * published["accepted"]
    complete = [seq for seq in range(events) if counts[seq] == held]
    window = max(last) - published["first_sent"] if received else 0.0
    summary = {"expected": expected, "received": received, "lost": expected - received}
    summary |= {key: sum(result[key] for result in results) for key in ("duplicates", "unknown", "resets")}
    summary |= {"streams_lost": sum(result["lost"] for result in results), "events_complete": len(complete)}
    summary["latency_from_send_s"] = percentiles(lat_sent, (50, 90, 99, 99.9))
    summary["latency_from_published_at_s"] = percentiles(lat_published, (50, 90, 99, 99.9))
    summary["completion_s"] = percentiles(last[seq] - sent_at[seq] for seq in complete)
    summary["first_to_last_s"] = percentiles(last[seq] - first[seq] for seq in complete)
    summary |= {"window_s": window, "per_s": received / window if window > 0 else None}
    summary["per_event"] = [
        {"seq": seq, "received": n, "first_s": first[seq] - sent_at[seq] if n else None}
        | {"completion_s": last[seq] - sent_at[seq] if n else None}
        for seq, n in enumerate(counts)
    ]
    return summary


def memory_row(name: str, streams: int, *phases: dict[str, Any]) -> dict[str, Any]:
    """Memory and fds of process `name` at each phase's snapshot; per stream: the increase over the first phase
    (marginal) and the whole process at the second phase (all-in)."""
    row: dict[str, Any] = {"name": name, "streams": streams, "fds": [phase[name]["fds"] for phase in phases]}
    for kind in ("rss", "pss", "uss", "anon"):
        values = row[f"{kind}_kb"] = [phase[name][f"{kind}_kb"] for phase in phases]
        row[f"{kind}_per_stream_kb"] = (values[1] - values[0]) / streams if streams else None
        row[f"{kind}_all_in_per_stream_kb"] = values[1] / streams if streams else None
    return row


def memory_table(
    rows: list[dict[str, Any]], phases: str, extra: dict[str, Callable[[dict], str]] | None = None
) -> list[str]:
    """A Markdown table of memory_row()s: memory and fds at each phase, per stream, and `extra` columns."""
    extra = extra or {}
    lines = [
        f"| process | streams | RSS MiB {phases} | RSS/stream | PSS MiB {phases} | PSS/stream | USS/stream | "
        f"RSS all-in/stream | fds {phases} |" + "".join(f" {name} |" for name in extra),
        "| --- | ---: | --- | ---: | --- | ---: | ---: | ---: | --- |" + " --- |" * len(extra),
    ]
    for row in rows:
        cells = [
            row["name"],
            f"{row['streams']:,}",
            " -> ".join(map(mib, row["rss_kb"])),
            kib(row["rss_per_stream_kb"]),
        ]
        cells += [" -> ".join(map(mib, row["pss_kb"])), kib(row["pss_per_stream_kb"]), kib(row["uss_per_stream_kb"])]
        cells += [kib(row["rss_all_in_per_stream_kb"]), " -> ".join(map(str, row["fds"]))]
        lines.append("| " + " | ".join(cells + [cell(row) for cell in extra.values()]) + " |")
    return lines


def run(scenario: type[Harness], args: argparse.Namespace, render: Callable[[dict[str, Any]], str]) -> int:
    """Run `scenario(args).main()` with signals handled and cleanup guaranteed; print and save the report. Exit
    status: 0, 1 when the run failed, 130 when interrupted, or report["exit_status"] (a failed check)."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGINT too: a run started in the background begins with SIGINT ignored.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    raise_nofile_limit()
    harness = scenario(args)
    try:
        report = asyncio.run(harness.main())
    except KeyboardInterrupt:
        print("interrupted: stopping everything this run started", file=sys.stderr)
        return 130
    except (BenchError, *FAILURES) as exc:
        harness.report_failure(exc)
        return 1
    finally:
        harness.cleanup()
    print(render(report))
    print(f"\nJSON: {write_report(report, args.results_dir)}")
    return report.get("exit_status", 0)
