"""The deploy kit for real: the shipped nginx site in front of two Daphne workers, the systemd units, the
environment file. nginx runs as a plain child process of the test (its own prefix, a throwaway certificate,
free loopback ports); tests/browser/test_https.py drives Chromium through the same harness."""

import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.system.harness import PYTHON, ROOT, SERVERS, SSEClient, Worker, free_port, wait_for_port

pytestmark = pytest.mark.timeout(60)

DEPLOY = ROOT / "deploy"
RENDER = DEPLOY / "render.py"
# Debian puts nginx in /usr/sbin, which a non-root PATH may lack.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
# The test's own nginx.conf around the shipped site: everything nginx writes stays in the prefix, nothing
# is daemonised, and under root its worker processes stay root (they read the test's private temp files).
MAIN_CONF = """\
{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/livesite.conf;
}}
"""


def require_nginx() -> str:
    """nginx's path; a clear failure (never a skip) without it: CI installs it (.ci/run)."""
    if NGINX is None:
        pytest.fail("nginx is not installed: `apt-get install -y nginx` (.ci/run does); the shipped site needs it")
    return NGINX


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (openssl CLI, one day); (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install -y openssl): the test makes its certificate with it")
    certificate, key = directory / "tls.crt", directory / "tls.key"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    command += ["-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    subprocess.run(
        [*command, "-keyout", str(key), "-out", str(certificate)], check=True, capture_output=True, timeout=30
    )
    return certificate, key


def render_site(**values: str) -> subprocess.CompletedProcess[str]:
    """deploy/render.py run as the deploy guide runs it, with NAME=value arguments."""
    return subprocess.run(
        [PYTHON, str(RENDER), *(f"{name}={value}" for name, value in values.items())],
        env={key: value for key, value in os.environ.items() if key not in values},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class Nginx:
    """The shipped site (deploy/nginx/livesite.conf.template, rendered by deploy/render.py) run by a private
    nginx on free loopback ports. Ports are chosen first so the workers can be told the public origin."""

    def __init__(self, directory: Path) -> None:
        self.prefix = directory / "nginx"
        self.https_port = free_port()
        self.http_port = free_port()
        self.certificate = self.prefix / "tls.crt"
        self.process: subprocess.Popen | None = None

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def trust(self) -> ssl.SSLContext:
        """A TLS context that trusts this proxy's throwaway certificate, and nothing else."""
        return ssl.create_default_context(cafile=self.certificate)

    def start(self, workers: list[Worker], static_root: Path) -> "Nginx":
        binary = require_nginx()
        self.prefix.mkdir(parents=True)
        certificate, key = make_certificate(self.prefix)
        rendered = render_site(
            PUBLIC_ORIGIN=self.origin,
            HTTPS_LISTEN=f"127.0.0.1:{self.https_port}",
            HTTP_LISTEN=f"127.0.0.1:{self.http_port}",
            WORKERS=",".join(f"127.0.0.1:{worker.port}" for worker in workers),
            TLS_CERTIFICATE=str(certificate),
            TLS_CERTIFICATE_KEY=str(key),
            STATIC_ROOT=str(static_root),
        )
        assert rendered.returncode == 0, rendered.stderr
        (self.prefix / "livesite.conf").write_text(rendered.stdout)
        user = "user root;\n" if os.geteuid() == 0 else ""  # else nginx would drop to `nobody`
        (self.prefix / "nginx.conf").write_text(MAIN_CONF.format(prefix=self.prefix, user=user))
        command = [binary, "-e", "stderr", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")]
        tested = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30, check=False)
        assert tested.returncode == 0, f"nginx -t refused the rendered site:\n{tested.stderr}"
        self.log = (self.prefix / "nginx.out").open("ab")
        self.process = subprocess.Popen(
            [*command, "-g", "daemon off;"], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_port(self.https_port, self.process)
            wait_for_port(self.http_port, self.process)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"nginx did not start: {exc}\n{self.logs()}") from exc
        return self

    def stop(self) -> None:
        """SIGTERM to the master (by its pid): a fast shutdown that takes its worker processes with it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the master and its workers
                self.process.wait(timeout=10)
        if self.process is not None:
            self.log.close()

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for name in ("nginx.out", "error.log")
            if (path := self.prefix / name).exists()
        )


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Nginx]:
    """A private nginx for the shipped site: call `.start(workers, static_root)` once the workers run."""
    proxy = Nginx(tmp_path)
    yield proxy
    proxy.stop()


def https_client(proxy: Nginx) -> httpx.Client:
    """A client of the public site that trusts its throwaway certificate (and nothing else)."""
    return httpx.Client(base_url=proxy.origin, verify=proxy.trust(), timeout=10, follow_redirects=False)


def _static_files(root: Path) -> Path:
    """A collected-static folder in miniature: one hashed name with its .gz, one plain name."""
    (root / "web").mkdir(parents=True)
    (root / "web" / "app.0123456789ab.js").write_text("console.log('hashed');\n")
    (root / "web" / "app.0123456789ab.js.gz").write_bytes(
        subprocess.run(["gzip", "-c"], input=b"console.log('hashed');\n", capture_output=True, check=True).stdout
    )
    (root / "web" / "app.js").write_text("console.log('plain');\n")
    return root


@pytest.mark.system
@pytest.mark.parametrize("server", SERVERS)
async def test_https_reaches_both_workers_with_the_browsers_host_scheme_and_a_live_stream(
    redis_server, start_worker, nginx, tokens, monkeypatch, server
):
    # No PUBLIC_ORIGIN here, so no trusted CSRF origin either: signing in passes Django's Origin check only if
    # nginx forwards the Host WITH its port and the https scheme, and the workers believe them (under uvicorn
    # too, whose own proxy-header handling is off: deploy/systemd/uvicorn.conf).
    workers = [
        start_worker(redis_server.url, name=name, server=server, TRUST_PROXY_HEADERS="true") for name in ("one", "two")
    ]
    nginx.start(workers, static_root=ROOT / "static")

    with https_client(nginx) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        login = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        assert token is not None, login.text[:300]
        signed_in = client.post(
            "/accounts/login/",
            data={"username": "alice", "password": "pw-alice", "csrfmiddlewaretoken": token.group(1)},
            headers={"Origin": nginx.origin, "Referer": f"{nginx.origin}/accounts/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        assert signed_in.headers["location"] == "/"

    # Streams through the proxy: two in a row land on the two workers (round robin), each answers at once,
    # and an event published through the proxy reaches both while they are open (nothing buffered).
    monkeypatch.setenv("SSL_CERT_FILE", str(nginx.certificate))  # httpx's trust for the harness's SSE client
    streams = [SSEClient(nginx.origin, topics=["news.nginx"]) for _ in range(2)]
    try:
        holders = set()
        for stream in streams:
            hello = await stream.connect()
            holders.add(hello.json()["connection_id"].partition("~")[2])  # the holding worker's channel
        assert len(holders) == 2, f"both streams on one worker: {holders}"
        async with httpx.AsyncClient(verify=nginx.trust(), timeout=10) as client:
            published = await client.post(
                f"{nginx.origin}/api/publish",
                json={"topic": "news.nginx", "type": "news.posted", "data": {"n": 1}},
                headers={"Authorization": f"Token {tokens['admin']}"},
            )
        assert published.status_code == 202, published.text
        for stream in streams:
            frame = await stream.next_event("news.posted", timeout=3)
            assert frame.json()["data"] == {"n": 1}
    finally:
        for stream in streams:
            await stream.close()


@pytest.mark.system
def test_nginx_keeps_operator_endpoints_private_redirects_http_and_serves_static_files(
    redis_server, start_worker, nginx, tokens, tmp_path
):
    worker = start_worker(redis_server.url, TRUST_PROXY_HEADERS="true", REALTIME_MAX_STREAMS_PER_ADDRESS="1")
    nginx.start([worker], static_root=_static_files(tmp_path / "static"))
    admin = {"Authorization": f"Token {tokens['admin']}"}

    with https_client(nginx) as client:
        # The worker answers these on loopback; the public site does not pass them on.
        assert httpx.get(f"{worker.url}/realtime/stats", headers=admin, timeout=10).status_code == 200
        for path in ("/metrics", "/realtime/stats", "//metrics", "/%6Detrics"):
            refused = client.get(nginx.origin + path, headers=admin)  # a full URL: "//x" alone names a host
            assert refused.status_code == 404, (path, refused.text[:200])
            assert refused.headers["content-type"].startswith("text/html"), "answered by a worker, not nginx"

        hashed = client.get("/static/web/app.0123456789ab.js", headers={"Accept-Encoding": "gzip"})
        assert hashed.status_code == 200
        assert hashed.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert hashed.headers["content-encoding"] == "gzip"  # the collected .gz, not compressed per request
        assert hashed.text == "console.log('hashed');\n"
        plain = client.get("/static/web/app.js")
        assert plain.headers["cache-control"] == "public, max-age=3600"
        assert plain.headers["content-type"] == "application/javascript"
        assert client.get("/static/web/missing.js").status_code == 404

        # A client's own X-Forwarded-For cannot choose the address it is counted as: the workers take the last
        # hop, which nginx appends. One stream per address here, so a second one is refused whatever it claims.
        with client.stream("GET", "/realtime/connect", headers={"X-Forwarded-For": "203.0.113.1"}) as first:
            assert first.status_code == 200
            with client.stream("GET", "/realtime/connect", headers={"X-Forwarded-For": "203.0.113.2"}) as second:
                assert second.status_code == 429
                assert "too_many_streams" in second.read().decode()

    # Plain HTTP: the same path and query on the public HTTPS origin.
    redirected = httpx.get(f"http://127.0.0.1:{nginx.http_port}/videos/x/?a=1", timeout=10)
    assert redirected.status_code == 301
    assert redirected.headers["location"] == f"{nginx.origin}/videos/x/?a=1"


def test_render_refuses_a_missing_origin_or_an_unknown_variable(tmp_path):
    missing = render_site()
    assert missing.returncode == 2
    assert "PUBLIC_ORIGIN is required" in missing.stderr
    assert render_site(PUBLIC_ORIGIN="http://live.example.org").returncode == 2  # TLS is the point

    rendered = render_site(PUBLIC_ORIGIN="https://live.example.org")
    assert rendered.returncode == 0, rendered.stderr
    assert "${" not in rendered.stdout
    assert "ssl_certificate /etc/letsencrypt/live/live.example.org/fullchain.pem;" in rendered.stdout
    assert "server 127.0.0.1:8101;\n    server 127.0.0.1:8102;" in rendered.stdout
    assert "proxy_set_header Host $http_host;" in rendered.stdout  # nginx's own variables left alone

    template = tmp_path / "site.conf"
    template.write_text("listen ${HTTPS_LISTEN};\nroot ${STATIK_ROOT};\n")
    typo = subprocess.run(
        [PYTHON, str(RENDER), str(template), "PUBLIC_ORIGIN=https://a.example"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert typo.returncode == 2
    assert "unknown variables: STATIK_ROOT" in typo.stderr


def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (package systemd): the units cannot be verified here")
    # verify also checks that ExecStart's program exists: point the units at this checkout's virtualenv.
    for unit in (DEPLOY / "systemd").glob("livesite*"):
        (tmp_path / unit.name).write_text(unit.read_text().replace("/srv/livesite", str(ROOT)))
    assert (ROOT / ".venv" / "bin" / "python").exists(), "the units run the project's .venv (make venv)"
    units = ["livesite@8101.service", "livesite@8102.service", "livesite.target"]

    def verify() -> subprocess.CompletedProcess[str]:
        command = [analyze, "verify", "--man=no", *units]
        return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    # Unknown keys and bad values are only warnings (exit 0): any output at all fails the test.
    result = verify()
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
    # uvicorn instead of Daphne: the drop-in, where systemd finds it beside the unit.
    drop_in = tmp_path / "livesite@.service.d"
    drop_in.mkdir()
    uvicorn = (DEPLOY / "systemd" / "uvicorn.conf").read_text()
    (drop_in / "uvicorn.conf").write_text(uvicorn.replace("/srv/livesite", str(ROOT)))
    result = verify()
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
    # uvicorn must not close an idle connection that nginx may still send a request on.
    nginx_idle = re.search(r"keepalive_timeout (\d+)s;", (DEPLOY / "nginx" / "livesite.conf.template").read_text())
    uvicorn_idle = re.search(r"--timeout-keep-alive (\d+) ", uvicorn)
    assert nginx_idle is not None
    assert uvicorn_idle is not None
    assert int(uvicorn_idle[1]) > int(nginx_idle[1])
    assert "--no-proxy-headers" in uvicorn
    service = (DEPLOY / "systemd" / "livesite@.service").read_text()
    assert "Restart=on-failure" in service
    assert "EnvironmentFile=/etc/livesite/livesite.env" in service
    assert "--bind 127.0.0.1 --port %i" in service
    assert "WantedBy=livesite.target" in service


def test_the_shipped_environment_file_passes_the_deploy_security_checks_once_its_key_is_set():
    # The security checks are what this file decides (Django's and livesite's own, both tagged `security`);
    # the whole `check --deploy` with the README's environment is tests/test_deploy.py's.
    env_file = DEPLOY / "livesite.env.example"
    shipped = dict(
        line.split("=", 1) for line in env_file.read_text().splitlines() if line.strip() and not line.startswith("#")
    )
    assert {"SECRET_KEY", "PUBLIC_ORIGIN", "TRUST_PROXY_HEADERS", "REDIS_URL", "DATABASE_URL"} <= shipped.keys()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "SECURE_", "REALTIME_", "REDIS_"))}

    def check(secret_key: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYTHON, "manage.py", "check", "--deploy", "--tag", "security", "--fail-level", "WARNING"],
            cwd=ROOT,
            env={**clean, **shipped, "SECRET_KEY": secret_key, "DJANGO_SETTINGS_MODULE": "livesite.settings"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    result = check(secrets.token_urlsafe(50))
    assert result.returncode == 0, result.stdout + result.stderr
    placeholder = check(shipped["SECRET_KEY"])  # an operator who forgets to replace it is stopped
    assert placeholder.returncode != 0
    assert "SECRET_KEY" in placeholder.stderr
