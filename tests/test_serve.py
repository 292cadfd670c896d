"""livesite.serve: Daphne on uvloop, listening with a deep accept queue (a reconnect storm is not dropped)."""

import subprocess
from pathlib import Path

from livesite.serve import LISTEN_BACKLOG, with_backlog


def test_tcp_endpoints_get_the_deep_backlog_and_others_are_left_alone() -> None:
    assert with_backlog(["tcp:port=8000:interface=127.0.0.1", "unix:/run/x.sock", "fd:fileno=3"]) == [
        f"tcp:port=8000:interface=127.0.0.1:backlog={LISTEN_BACKLOG}",
        "unix:/run/x.sock",
        "fd:fileno=3",
    ]
    assert with_backlog(["tcp:port=1:backlog=7"]) == ["tcp:port=1:backlog=7"]


def test_a_worker_really_listens_with_it(tmp_path: Path) -> None:
    from tests.system.harness import Worker, base_env

    worker = Worker(base_env(tmp_path)).start()
    try:
        # ss shows a listening socket's backlog in its Send-Q column.
        lines = subprocess.run(
            ["ss", "-ltn", f"sport = :{worker.port}"], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        listening = [line.split() for line in lines[1:] if line.strip()]
        assert listening, lines
        assert int(listening[0][2]) == LISTEN_BACKLOG
    finally:
        worker.stop()
