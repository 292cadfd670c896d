"""The peer of bench/sidebyside.py: django-eventstream's minimal project (bench/peers/eventstream).

Its workers are `daphne peersite.asgi:application` processes run from the peer's own virtualenv
(bench/peers/eventstream/.venv), which `ensure_peer_venv` creates from the pinned requirements when missing:
our own requirements stay untouched. Processes are started with bench/procs.py's helpers, so they are stopped
by PID like every other benchmark process.
"""

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, Managed, _spawn, free_port, wait_for_port


def redis_command(port: int, *args: str, timeout: float = 10.0) -> bytes:
    """Send one command to the redis-server on 127.0.0.1:port (RESP); its raw first reply line."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if reply.startswith(b"-"):
        raise RuntimeError(f"redis {args[0]}: {reply.decode(errors='replace').strip()}")
    return reply.strip()


PEER_DIR = Path(__file__).resolve().parent / "peers" / "eventstream"
PEER_VENV = PEER_DIR / ".venv"
PEER_REQUIREMENTS = PEER_DIR / "requirements.txt"
_PEER_STAMP = PEER_VENV / ".bench-requirements.sha256"


def ensure_peer_venv(timeout: float = 600.0) -> dict[str, Any]:
    """Create the peer's own virtualenv from its pinned requirements if missing or stale; what it holds.

    `python3 -m venv bench/peers/eventstream/.venv`, then its pip installs bench/peers/eventstream/
    requirements.txt from PyPI. A stamp (the requirements' hash) says when it is up to date.
    """
    wanted = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    python = PEER_VENV / "bin" / "python"
    current = _PEER_STAMP.read_text().strip() if _PEER_STAMP.exists() else ""
    if current != wanted or not (PEER_VENV / "bin" / "daphne").exists():
        base = shutil.which("python3") or PYTHON
        print(
            f"setting up the peer's virtualenv {PEER_VENV} (pip install -r {PEER_REQUIREMENTS.name}) ...",
            file=sys.stderr,
        )
        started = time.monotonic()
        if not python.exists():
            subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True, timeout=timeout)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r", str(PEER_REQUIREMENTS)],
            capture_output=True,
            text=True,
            check=False,
            timeout=max(30.0, timeout - (time.monotonic() - started)),
        )
        if result.returncode != 0:
            raise RuntimeError(f"pip install for the peer failed:\n{result.stderr[-3000:]}")
        _PEER_STAMP.write_text(wanted + "\n")
    freeze = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    wanted_names = ("django-eventstream", "django", "daphne", "redis", "twisted")
    versions = {
        name: version for name, _, version in (line.partition("==") for line in freeze) if name.lower() in wanted_names
    }
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    return {"venv": str(PEER_VENV), "python": version, "packages": versions}


def peer_env(redis_port: int, secret: str) -> dict[str, str]:
    """The peer workers' environment: ours without Python or Django knobs, then the peer's settings."""
    prefixes = ("PEER_", "DJANGO_", "PYTHON", "VIRTUAL_ENV", "REDIS_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update(
        PYTHONPATH=str(PEER_DIR),
        DJANGO_SETTINGS_MODULE="peersite.settings",
        PEER_REDIS_HOST="127.0.0.1",
        PEER_REDIS_PORT=str(redis_port),
        PEER_REDIS_DB="0",
        PEER_PUBLISH_SECRET=secret,
        PEER_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_peer_workers(count: int, env: dict[str, str], tmp: Path, deadline: float) -> list[Managed]:
    """N `daphne peersite.asgi:application` processes from the peer's virtualenv, on free ports."""
    daphne = str(PEER_VENV / "bin" / "daphne")
    workers = []
    for index in range(count):
        port = free_port()
        args = [daphne, "-b", "127.0.0.1", "-p", str(port), "peersite.asgi:application"]
        log_path = tmp / f"peer-w{index}-{port}.log"
        workers.append(_spawn(f"w{index}", args, env=env, log_path=log_path, port=port, cwd=PEER_DIR))
    for worker in workers:
        wait_for_port(worker.port, worker.process, deadline)
    return workers
