"""The /messages/ page: members only, their conversations only; seed_demo's conversations; the settings checks."""

import io

import pytest
from django.core.management import call_command

from messaging import checks, conf
from messaging.models import Conversation, Message, Participant

pytestmark = pytest.mark.django_db


def test_the_page_lists_your_conversations_and_opens_the_most_recent(client, group, direct, alice, dave):
    client.force_login(alice)
    response = client.get("/messages/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "Weekend plans" in page
    assert f'data-conversation="{direct.pk}"' in page
    assert 'aria-label="Messages"' in page
    assert f'data-member="{alice.pk}"' in page


def test_a_conversation_you_are_not_in_is_a_404_page(client, group, dave):
    client.force_login(dave)
    assert client.get(f"/messages/{group.pk}/").status_code == 404
    assert client.get("/messages/").status_code == 200  # nothing to open: an empty page


def test_anonymous_visitors_are_sent_to_sign_in(client, db):
    response = client.get("/messages/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_seed_demo_makes_a_group_and_two_one_to_one_conversations_once(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    call_command("seed_demo", stdout=io.StringIO())
    groups = Conversation.objects.filter(kind="group")
    directs = Conversation.objects.filter(kind="direct")
    assert groups.count() == 1
    assert directs.count() == 2
    members = set(Participant.objects.filter(conversation=groups.get()).values_list("member__username", flat=True))
    assert members == {"alice", "bob", "carol"}
    before = Message.objects.count()
    assert before >= 5
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "up to date" in out.getvalue()
    assert Message.objects.count() == before
    assert Conversation.objects.count() == 3


@pytest.mark.parametrize(
    ("override", "check_id"),
    [
        ({"MAX_PARTICIPANTS": 1}, "messaging.E001"),
        ({"TYPING_TIMEOUT_SECS": 1.0}, "messaging.E002"),
        ({"TYPING_SWEEP_SECS": 0}, "messaging.E003"),
        ({"RECEIPT_COALESCE_MS": "300"}, "messaging.E004"),
        ({"RATE_LIMITS": "message=fast"}, "messaging.E005"),
        ({"RATE_LIMITS": "likes=1/s"}, "messaging.E005"),
    ],
)
def test_bad_settings_fail_the_system_checks(settings, override, check_id):
    settings.MESSAGING = {**settings.MESSAGING, **override}
    assert [error.id for error in checks.check_messaging_settings(None)] == [check_id]


def test_the_shipped_settings_pass_and_rates_have_documented_defaults(settings):
    assert checks.check_messaging_settings(None) == []
    settings.MESSAGING = {}
    assert conf.parse_rates(conf.get("RATE_LIMITS")) == {"message": "5/s", "typing": "5/s", "conversation": "30/m"}
    assert str(conf.rate("message")) == "5 per 1 s"
