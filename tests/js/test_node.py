"""The client's own tests (tests/js/*.test.mjs) under Node's test runner, against a real Daphne worker, and
the package as npm would install it."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.system.harness import ROOT

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

TESTS = Path(__file__).resolve().parent
PACKAGE = ROOT / "static" / "realtime"


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is not installed, and CI must run the client's tests")
        pytest.skip(
            f"SKIPPED LOUDLY: {tool} is not installed; the client's tests need Node 20 (apt-get install nodejs)"
        )
    return path


def test_node_suite_passes_against_a_real_worker(start_worker, site):
    node = require("node")
    worker = start_worker()
    env = {
        **os.environ,
        "REALTIME_TEST_URL": worker.url,
        "REALTIME_TEST_MEMBERS": json.dumps(site["members"]),
    }
    files = sorted(str(path) for path in TESTS.glob("*.test.mjs"))
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", *files],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    # Each test needs the server: none may skip itself (tests/js/helpers.mjs skips without REALTIME_TEST_URL).
    assert re.search(r"\bskipped 0\b", result.stdout), result.stdout[-3_000:]


def test_npm_pack_makes_a_package_that_installs_and_imports(tmp_path):
    npm = require("npm")
    node = require("node")
    packed = subprocess.run(
        [npm, "pack", "--json", "--pack-destination", str(tmp_path)],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (info,) = json.loads(packed.stdout)
    assert info["name"] == "@livesite/realtime"
    assert sorted(entry["path"] for entry in info["files"]) == [
        "README.md",
        "package.json",
        "realtime.d.ts",
        "realtime.js",
        "realtime.mjs",
    ]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "version": "1.0.0", "private": true}')
    subprocess.run(
        [npm, "install", "--offline", "--no-audit", "--no-fund", str(tmp_path / info["filename"])],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    script = (
        "import Realtime, { Client, VERSION } from '@livesite/realtime';"
        "console.log(JSON.stringify([VERSION, typeof Client, typeof Realtime.connect]));"
    )
    imported = subprocess.run(
        [node, "--input-type=module", "-e", script], cwd=app, capture_output=True, text=True, timeout=30, check=True
    )
    assert json.loads(imported.stdout) == [info["version"], "function", "function"]
