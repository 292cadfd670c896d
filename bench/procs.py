"""The server side of a benchmark: a private redis-server, a migrated SQLite site and N Daphne workers.

Everything runs on free loopback ports in a temp dir, so nothing else on the machine is disturbed, and every
process started here is stopped here, by PID (also when the parent dies: PR_SET_PDEATHSIG).
"""

import contextlib
import ctypes
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
DAPHNE = str(Path(sys.executable).with_name("daphne"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
_PR_SET_PDEATHSIG = 1
# The last line of a traceback, e.g. "redis.exceptions.TimeoutError: Timeout reading from ...".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")

STAFF_SCRIPT = """
import json
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user, _ = User.objects.get_or_create(username="bench", defaults={"is_staff": True, "is_superuser": True})
print(json.dumps({"token": Token.objects.get_or_create(user=user)[0].key, "id": user.pk}))
"""


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM this process when the process that started it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit (the hard one cannot be raised here)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


# -- /proc readings ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        fields = handle.read().rpartition(b")")[2].split()
    # After "pid (comm)": state is field 3, utime 14, stime 15 (1-based) -> 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS, USS (private) and anonymous memory (KiB) from /proc/PID/smaps_rollup.

    PSS divides each shared page by the number of processes mapping it, so it moves when other processes
    that map the same files (Python, its libraries) start or stop: read it with the same processes alive.
    """
    fields = {"Rss": "rss_kb", "Pss": "pss_kb", "Private_Clean": "uss_kb", "Private_Dirty": "uss_kb"}
    fields["Anonymous"] = "anon_kb"
    result = {"rss_kb": 0, "pss_kb": 0, "uss_kb": 0, "anon_kb": 0}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                key = fields.get(name)
                if key is not None:
                    result[key] += int(rest.split()[0])
    except FileNotFoundError:
        pass
    return result


def machine_cpu_seconds() -> float:
    """CPU seconds all processes of the machine spent busy so far (everything but idle and iowait)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except FileNotFoundError:
        return 0


def sample(pid: int) -> dict[str, Any]:
    """One reading of a process: memory, open files and CPU so far."""
    try:
        return {**memory_kb(pid), "fds": open_fds(pid), "cpu_s": cpu_seconds(pid), "time": time.time()}
    except (FileNotFoundError, ProcessLookupError):
        return {"rss_kb": 0, "pss_kb": 0, "uss_kb": 0, "anon_kb": 0, "fds": 0, "cpu_s": 0.0, "time": time.time()}


# -- processes -----------------------------------------------------------------------------------


@dataclass
class Managed:
    """A process this benchmark started: stopped by its PID, SIGTERM then SIGKILL."""

    name: str
    process: subprocess.Popen
    port: int = 0
    log_path: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)

    def log_problems(self) -> list[str]:
        """Lines of this process's log that report an error (for the JSON, and to print on failure)."""
        if self.log_path is None or not self.log_path.exists():
            return []
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if " ERROR " in line or " CRITICAL " in line or _EXCEPTION_LINE.match(line)]


def _spawn(name: str, args: list[str], *, env: dict[str, str], log_path: Path, port: int, cwd: Path) -> Managed:
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C in the terminal reaches only us, and we stop it in order.
            start_new_session=True,
            preexec_fn=die_with_parent,  # runs in the child; we start it from the main thread only
        )
    return Managed(name, process, port, log_path)


def start_redis(tmp: Path, deadline: float) -> Managed:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    args += ["--dir", str(tmp)]
    redis = _spawn("redis", args, env=dict(os.environ), log_path=tmp / "redis.log", port=port, cwd=tmp)
    wait_for_port(port, redis.process, deadline)
    return redis


HOOKS = Path(__file__).resolve().parent / "sitehooks"


def read_gc_stats(worker: Managed) -> dict[str, Any] | None:
    """The collections counted by sitehooks in a worker run with --worker-gc-stats, if any."""
    path = worker.info.get("gc_stats")
    try:
        with open(path) as handle:
            return json.load(handle)
    except (TypeError, OSError, ValueError):
        return None


def export_tree(rev: str, dest: Path) -> str:
    """Extract the site as committed at `rev` into `dest` (what runs is then exactly that commit); its hash."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return commit


def site_env(tmp: Path, redis_url: str, root: Path, **overrides: str) -> dict[str, str]:
    """The workers' environment: ours without any livesite knob, then the benchmark's own."""
    prefixes = ("REALTIME_", "PRESENCE_", "LIKES_", "REDIS_", "DATABASE_", "DJANGO_", "PYTHONPATH")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(
        PYTHONPATH=str(root),
        DJANGO_SETTINGS_MODULE="livesite.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}",
        REDIS_URL=redis_url,
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


def prepare_site(env: dict[str, str], root: Path, deadline: float) -> dict[str, Any]:
    """Migrate the SQLite file and create a staff user with a DRF token; returns {"token", "id"}."""
    timeout = max(5.0, deadline - time.monotonic())
    steps = [
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"],
        [PYTHON, "-c", "import django; django.setup()\n" + STAFF_SCRIPT],
    ]
    output = ""
    for step in steps:
        result = subprocess.run(step, cwd=root, env=env, capture_output=True, text=True, check=False, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(step[:3])} failed in {root}:\n{result.stderr[-3000:]}")
        output = result.stdout
    return json.loads(output.strip().splitlines()[-1])


def start_workers(
    count: int,
    env: dict[str, str],
    tmp: Path,
    root: Path,
    deadline: float,
    *,
    ports: list[int] | None = None,
    prefix: str = "w",
) -> list[Managed]:
    """Start `count` workers on free ports (or on `ports`, chosen beforehand); named and logged as <prefix><i>."""
    workers = []
    for index in range(count):
        port = ports[index] if ports else free_port()
        # The site's own entry point (Daphne on uvloop) where the revision has one, else plain Daphne.
        launcher = [PYTHON, "-m", "livesite.serve"] if (root / "livesite" / "serve.py").exists() else [DAPHNE]
        args = [*launcher, "-b", "127.0.0.1", "-p", str(port), "livesite.asgi:application"]
        log_path = tmp / f"{prefix}{index}-{port}.log"
        worker_env = dict(env)
        if "BENCH_GC_STATS" in env:
            worker_env["BENCH_GC_STATS"] = str(tmp / f"gc-{prefix}{index}.json")
        workers.append(_spawn(f"{prefix}{index}", args, env=worker_env, log_path=log_path, port=port, cwd=root))
    for index, worker in enumerate(workers):
        if "BENCH_GC_STATS" in env:
            worker.info["gc_stats"] = str(tmp / f"gc-{prefix}{index}.json")
        wait_for_port(worker.port, worker.process, deadline)
    return workers


# -- small helpers shared by the benchmarks -------------------------------------------------------


def write_report(report: dict[str, Any], directory: Path, name: str | None = None) -> Path:
    """Write `report` as JSON to `directory` (made if needed), as `name`.json or <config name>-<stamp>.json."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name or report['config']['name'] + '-' + report['stamp']}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    return path


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so a run stops what it started on either.

    SIGINT too because a run started in the background begins with SIGINT ignored.
    """

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def percentiles(values: Any, points: tuple[float, ...] = (50, 90, 99)) -> dict[str, float | None]:
    """Nearest-rank percentiles and the max of `values`, in their unit; None when there are no values."""
    ordered = sorted(values)
    result: dict[str, float | None] = {}
    for point in points:
        key = f"p{point:g}".replace(".", "_")
        result[key] = ordered[max(0, math.ceil(point / 100 * len(ordered)) - 1)] if ordered else None
    result["max"] = ordered[-1] if ordered else None
    return result


def machine_info() -> dict[str, Any]:
    """The machine and the code: cores, memory, kernel, Python, git commit and files changed."""
    import platform  # Imported here: only the benchmarks' reports need it.

    with open("/proc/meminfo") as handle:
        total_kb = int(handle.readline().split()[1])

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False, cwd=ROOT).stdout

    return {
        "cpus": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "mem_gib": round(total_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "git_commit": git("rev-parse", "HEAD").strip(),
        "git_dirty_files": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()],
        "nofile": raise_nofile_limit(),
    }
