"""What an operator meets on a fresh clone: `check --deploy` clean with production settings from the
environment alone, the development key refused, /api/docs served without a CDN, hashed static names."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parents[1]
# The README's production environment, nothing more: the public address says the rest.
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "PUBLIC_ORIGIN": "https://live.example.org",
    "TRUST_PROXY_HEADERS": "true",
}


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCTION and not k.startswith(("DJANGO_", "SECURE_"))}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "livesite.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_check_deploy_is_clean_with_production_settings_from_the_environment() -> None:
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_a_public_site_without_its_own_key_fails_every_check_not_only_deploy() -> None:
    result = _manage("check", PUBLIC_ORIGIN="https://live.example.org", TRUST_PROXY_HEADERS="true")
    assert result.returncode != 0
    assert "livesite.E002" in result.stderr + result.stdout


def test_https_redirects_without_trusted_proxy_headers_are_a_warning() -> None:
    result = _manage("check", "--fail-level", "WARNING", **{**PRODUCTION, "TRUST_PROXY_HEADERS": "false"})
    assert result.returncode != 0
    assert "livesite.W002" in result.stderr + result.stdout


def test_a_malformed_public_origin_stops_the_site_saying_why() -> None:
    result = _manage("check", **{**PRODUCTION, "PUBLIC_ORIGIN": "live.example.org"})
    assert result.returncode != 0
    assert "PUBLIC_ORIGIN 'live.example.org' is not scheme://host[:port]" in result.stderr


def test_the_development_key_fails_check_deploy() -> None:
    result = _manage("check", "--deploy", **{k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"})
    assert result.returncode != 0
    assert "livesite.E001" in result.stderr + result.stdout


@pytest.mark.django_db
def test_api_docs_load_their_assets_from_the_site(client: Client) -> None:
    page = client.get("/api/docs").content.decode()
    assert "cdn" not in page.lower()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js").status_code == 200


def test_collectstatic_gives_hashed_names_when_configured(tmp_path: Path) -> None:
    # Collected into a temporary folder: the project's own STATIC_ROOT stays untouched.
    result = _manage(
        "shell",
        "-c",
        "from django.conf import settings; from django.core.management import call_command;"
        f"settings.STATIC_ROOT = {str(tmp_path)!r}; call_command('collectstatic', '--noinput', verbosity=0);"
        "from django.contrib.staticfiles.storage import staticfiles_storage as s; print(s.url('web/watch.js'))",
        STATIC_HASHED="true",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "staticfiles.json").exists()
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("/static/web/watch.")
    assert url.endswith(".js")
    assert url != "/static/web/watch.js"
