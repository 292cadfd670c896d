"""A throwaway redis-server for development, system tests and benchmarks.

One launcher for everything that needs a private Redis: `make run-cluster` (livesite/cluster.py), the system
tests (tests/system/harness.py `RedisServer`) and the benchmarks (bench/harness.py). The server listens on
127.0.0.1 only and keeps nothing on disk (`--save "" --appendonly no`)::

    server = devredis.start()          # a free port; or devredis.start(6380)
    ...  server.url                    # redis://127.0.0.1:<port>/0
    server.stop()                      # SIGTERM to its PID, SIGKILL if it lingers
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class RedisNotInstalledError(RuntimeError):
    """There is no `redis-server` on PATH (Debian: `apt-get install redis-server`)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(port: int, *args: str, timeout: float = 10.0) -> bytes:
    """Send one command to the redis-server on 127.0.0.1:`port` (RESP); its first reply line, stripped.

    Raises OSError when nothing answers and RuntimeError on an error reply.
    """
    request = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        request.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"".join(request))
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    if reply.startswith(b"-"):
        raise RuntimeError(f"redis {args[0]}: {reply.decode(errors='replace').strip()}")
    return reply.strip()


def answers(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers PING (a loading server answers -LOADING: not yet)."""
    try:
        return command(port, "PING", timeout=timeout) == b"+PONG"
    except (OSError, RuntimeError):
        return False


@dataclass
class RedisProcess:
    """A redis-server started by `start`: its port and process; stopped by its PID."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: str, timeout: float = 10.0) -> bytes:
        return command(self.port, *args, timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM to the process's PID and wait; SIGKILL if it has not exited within `timeout` seconds. Idempotent."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def start(
    port: int | None = None,
    *,
    directory: Path | None = None,
    log_path: Path | None = None,
    timeout: float = 10.0,
    **popen: Any,
) -> RedisProcess:
    """Start redis-server on 127.0.0.1:`port` (a free port if None) and wait until it answers PING.

    `directory` is its working dir (`--dir`), `log_path` gets its output (default: discarded), `popen` goes to
    subprocess.Popen (e.g. `start_new_session`, `preexec_fn`). If it exits or does not answer within `timeout`
    seconds, it is stopped and RuntimeError or TimeoutError is raised.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisNotInstalledError("redis-server is not installed (apt-get install redis-server)")
    port = port or free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if directory is not None:
        args += ["--dir", str(directory)]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log_path.open("ab")) if log_path else subprocess.DEVNULL
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **popen)  # noqa: S603
    server = RedisProcess(port, process)
    deadline = time.monotonic() + timeout
    while not answers(port, timeout=0.5):
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} before answering on port {port}")
        if time.monotonic() > deadline:
            server.stop()
            raise TimeoutError(f"redis-server did not answer on port {port} within {timeout:.0f}s")
        time.sleep(0.05)
    return server
