"""seed_demo: the documented demo members and videos, and nothing more on a second run."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from likes.models import LiveVideo

pytestmark = pytest.mark.django_db


def run() -> str:
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    return out.getvalue()


def snapshot() -> tuple:
    users = get_user_model().objects.order_by("username")
    return (
        [(u.username, u.get_full_name(), u.is_staff, u.is_superuser, u.password) for u in users],
        list(LiveVideo.objects.order_by("slug").values_list("slug", "status", "owner__username", "started_at")),
    )


def test_seed_demo_creates_the_members_and_videos_and_says_how_to_sign_in(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    output = run()
    users = {u.username: u for u in get_user_model().objects.all()}
    assert set(users) == {"admin", "alice", "bob", "carol"}
    assert users["admin"].is_superuser
    assert users["admin"].is_staff
    assert [users[name].get_full_name() for name in ["alice", "bob", "carol"]] == ["Alice", "Bob", "Carol"]
    assert all(user.check_password("livesite-demo") for user in users.values())
    assert LiveVideo.objects.filter(status="live").count() >= 3
    assert LiveVideo.objects.filter(status="ended").count() == 1
    assert "/accounts/login/" in output
    assert "livesite-demo" in output
    assert "alice" in output


def test_seed_demo_twice_changes_nothing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    run()
    before = snapshot()
    assert "up to date" in run()
    assert snapshot() == before


def test_seed_demo_uses_the_configured_password(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.DEMO_PASSWORD = "another-secret"
    assert "another-secret" in run()
    assert get_user_model().objects.get(username="bob").check_password("another-secret")
