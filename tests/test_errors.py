"""Django's own error pages answer API paths in the API's JSON shape, and keep their HTML elsewhere."""

from typing import Any

import pytest
from django.test import RequestFactory

from livesite import errors


@pytest.mark.parametrize("path", ["/api/nope", "/api/videos/1/nope", "/realtime/nope"])
def test_an_unknown_api_path_is_a_json_404(client: Any, db: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": f"no endpoint at {path}: see /api/docs", "code": "not_found"}


def test_an_unknown_page_keeps_the_html_404(client: Any, db: Any) -> None:
    response = client.get("/nope/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(("path", "json"), [("/api/publish", True), ("/videos/x/", False)])
def test_a_crash_is_a_json_500_on_api_paths_only(path: str, json: bool) -> None:
    response = errors.server_error(RequestFactory().post(path))
    assert response.status_code == 500
    if json:
        assert response["Content-Type"] == "application/json"
        assert b"server_error" in response.content
    else:
        assert response["Content-Type"].startswith("text/html")


def test_a_rate_limit_says_when_to_retry_once() -> None:
    from livesite.errors import RateLimited

    refused = RateLimited(wait=15, detail="too many requests (like: at most 1 per 60 s); retry in 15 s")
    assert str(refused.detail) == "too many requests (like: at most 1 per 60 s); retry in 15 s"
    assert refused.detail.code == "rate_limited"
    assert refused.wait == 15  # DRF's Retry-After
