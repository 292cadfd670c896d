"""The admin: moderation and membership changes go through the services, so open pages see them."""

import pytest
from django.urls import reverse

from messaging.models import Message, Participant
from tests.messaging.factories import make_conversation, make_member, make_message

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("model", ["conversation", "participant", "message"])
def test_each_changelist_answers(admin_client, group, alice, model):
    make_message(group, alice)
    assert admin_client.get(reverse(f"admin:messaging_{model}_changelist")).status_code == 200


def test_deleting_messages_for_everyone_empties_and_announces_them(
    admin_client, group, alice, bob, published, django_capture_on_commit_callbacks
):
    spam, fine = make_message(group, bob, "spam"), make_message(group, alice, "fine")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:messaging_message_changelist"),
            {"action": "moderate", "_selected_action": [spam.pk]},
            follow=True,
        )
    assert "1 message(s) deleted." in response.content.decode()
    spam.refresh_from_db()
    assert (spam.text, spam.deleted_by_moderator) == ("", True)
    assert Message.objects.get(pk=fine.pk).deleted is None
    assert [(e.type, e.data["id"], e.data["by_moderator"]) for e in published] == [("message.deleted", spam.pk, True)]


def test_deleting_one_message_from_its_page_is_the_same_moderation(
    admin_client, group, bob, published, django_capture_on_commit_callbacks
):
    spam = make_message(group, bob, "spam")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(reverse("admin:messaging_message_delete", args=[spam.pk]), {"post": "yes"})
    assert Message.objects.get(pk=spam.pk).deleted is not None
    assert [e.type for e in published] == ["message.deleted"]


def test_removing_a_participant_revokes_her_live_topics(
    admin_client, group, bob, published, django_capture_on_commit_callbacks
):
    row = Participant.objects.get(conversation=group, member=bob)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:messaging_participant_changelist"),
            {"action": "remove", "_selected_action": [row.pk]},
            follow=True,
        )
    assert "1 participant(s) removed." in response.content.decode()
    assert [(member, reason) for member, _, reason in published.revoked] == [(bob.pk, "removed_from_conversation")]


def test_adding_a_participant_in_the_admin_announces_her(
    admin_client, group, published, django_capture_on_commit_callbacks
):
    dave = make_member("dave")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            reverse("admin:messaging_participant_add"), {"conversation": group.pk, "member": dave.pk}
        )
    assert response.status_code == 302, response.content
    assert Participant.objects.filter(conversation=group, member=dave).exists()
    assert (f"conversation.{group.pk}.messages", "participant.added") in published.summary()


def test_deleting_a_conversation_revokes_every_participant(
    admin_client, alice, bob, published, django_capture_on_commit_callbacks
):
    conversation = make_conversation(alice, bob, title="gone")
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(
            reverse("admin:messaging_conversation_changelist"),
            {"action": "delete_conversations", "_selected_action": [conversation.pk]},
        )
    assert sorted(member for member, _, _ in published.revoked) == sorted([alice.pk, bob.pk])


def test_the_admin_refuses_a_third_member_in_a_one_to_one_conversation(admin_client, direct, published):
    dave = make_member("dave")
    response = admin_client.post(
        reverse("admin:messaging_participant_add"), {"conversation": direct.pk, "member": dave.pk}
    )
    assert response.status_code == 200
    assert "keeps its two members" in response.content.decode()
    assert not Participant.objects.filter(member=dave).exists()
    assert published == []
