"""Services: what each action stores, and the exact topic, type and payload it publishes after commit."""

from collections.abc import Callable

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction

from messaging import queries, services, sweeper
from messaging.models import Conversation, Message, Participant
from tests.messaging.conftest import RECEIPT_WINDOW_SECS
from tests.messaging.factories import make_conversation, make_member, make_message

pytestmark = pytest.mark.django_db


class Boom(Exception):
    pass


def roll_back(action: Callable[[], object]) -> None:
    def fail_after() -> None:
        with transaction.atomic():
            action()
            raise Boom

    with pytest.raises(Boom):
        fail_after()


def message_json(message: Message, **changes: object) -> dict:
    author = message.author
    data = {
        "id": message.pk,
        "conversation": message.conversation_id,
        "seq": message.seq,
        "author": {"id": author.pk, "name": author.get_full_name() or author.username} if author else None,
        "text": message.text,
        "created": message.created.isoformat().replace("+00:00", "Z"),
        "edited": None,
        "deleted": None,
    }
    data.update(changes)
    return data


# -- conversations --------------------------------------------------------------------------------


def test_a_group_is_created_with_its_creator_and_each_member_is_told(
    alice, bob, carol, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        conversation, created = services.create_conversation(alice, [bob.pk, carol.pk, bob.pk], "Plans")
    assert created
    assert (conversation.kind, conversation.title) == ("group", "Plans")
    assert sorted(conversation.participants.values_list("member_id", flat=True)) == sorted([alice.pk, bob.pk, carol.pk])
    assert published.summary() == [(f"member.{m.pk}.conversations", "conversation.added") for m in (alice, bob, carol)]
    assert published[0].data == {"conversation": conversation.pk, "kind": "group", "title": "Plans"}


def test_one_other_member_and_no_title_is_their_one_to_one_conversation_once(alice, bob, published):
    first, created = services.create_conversation(alice, [bob.pk])
    assert created
    assert first.kind == "direct"
    again, created_again = services.create_conversation(bob, [alice.pk])
    assert (again.pk, created_again) == (first.pk, False)
    assert Conversation.objects.count() == 1


@pytest.mark.parametrize(
    ("ids", "reason"),
    [([], "at least one other"), ([999_999], "no member has id 999999")],
)
def test_a_conversation_needs_existing_other_members(alice, ids, reason):
    with pytest.raises(services.InvalidConversation, match=reason):
        services.create_conversation(alice, ids)


def test_a_conversation_has_at_most_the_configured_participants(alice, bob, carol, settings):
    settings.MESSAGING = {**settings.MESSAGING, "MAX_PARTICIPANTS": 2}
    with pytest.raises(services.InvalidConversation, match="at most 2"):
        services.create_conversation(alice, [bob.pk, carol.pk])


def test_a_deactivated_member_cannot_be_added(alice, bob):
    bob.is_active = False
    bob.save()
    with pytest.raises(services.InvalidConversation, match=str(bob.pk)):
        services.create_conversation(alice, [bob.pk])


def test_adding_to_a_group_announces_the_newcomer_who_starts_with_nothing_unread(
    group, alice, dave, published, django_capture_on_commit_callbacks
):
    make_message(group, alice, "before dave")
    with django_capture_on_commit_callbacks(execute=True):
        [row] = services.add_participants(group, [dave])
    assert row.last_read_seq == 1
    assert published.summary() == [
        (f"member.{dave.pk}.conversations", "conversation.added"),
        (f"conversation.{group.pk}.messages", "participant.added"),
    ]
    assert published[1].data == {"conversation": group.pk, "member": {"id": dave.pk, "name": "Dave"}}


def test_a_one_to_one_conversation_takes_nobody_else(direct, dave):
    with pytest.raises(services.InvalidConversation, match="one-to-one"):
        services.add_participants(direct, [dave])


def test_removing_a_participant_revokes_her_topics_then_tells_everyone(
    group, bob, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert services.remove_participant(group, bob)
    assert not Participant.objects.filter(conversation=group, member=bob).exists()
    topics = [
        f"conversation.{group.pk}.messages",
        f"conversation.{group.pk}.typing",
        f"conversation.{group.pk}.receipts",
    ]
    assert published.revoked == [(bob.pk, topics, "removed_from_conversation")]
    assert published.summary() == [
        (f"member.{bob.pk}.conversations", "conversation.removed"),
        (f"conversation.{group.pk}.messages", "participant.removed"),
    ]
    assert published[1].data == {"conversation": group.pk, "member": bob.pk}
    assert not services.remove_participant(group, bob)


def test_a_removal_rolled_back_revokes_and_announces_nothing(group, bob, published, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        roll_back(lambda: services.remove_participant(group, bob))
    assert callbacks == []
    assert published == []
    assert published.revoked == []
    assert Participant.objects.filter(conversation=group, member=bob).exists()


def test_deleting_conversations_revokes_every_participant(
    group, direct, alice, bob, carol, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        assert services.delete_conversations([group, direct]) == 2
    assert sorted((member, topics[0]) for member, topics, _ in published.revoked) == sorted(
        [(m.pk, f"conversation.{group.pk}.messages") for m in (alice, bob, carol)]
        + [(m.pk, f"conversation.{direct.pk}.messages") for m in (alice, bob)]
    )
    assert {event.type for event in published} == {"conversation.removed"}
    assert Conversation.objects.count() == 0


# -- messages -------------------------------------------------------------------------------------


def test_a_message_is_numbered_stored_and_announced_after_commit(
    group, alice, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first = services.send_message(group, alice, "  hello  ")
        second = services.send_message(group, alice, "again")
    assert (first.text, first.seq, second.seq) == ("hello", 1, 2)
    assert Conversation.objects.get(pk=group.pk).last_seq == 2
    # Sending reads: the author's own mark moves with her messages.
    assert Participant.objects.get(conversation=group, member=alice).last_read_seq == 2
    assert [(e.topic, e.type, e.data) for e in published] == [
        (f"conversation.{group.pk}.messages", "message.created", message_json(first)),
        (f"conversation.{group.pk}.messages", "message.created", message_json(second)),
    ]


def test_a_rolled_back_message_is_neither_stored_nor_announced(
    group, alice, published, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        roll_back(lambda: services.send_message(group, alice, "never"))
    assert published == []
    assert Message.objects.count() == 0
    assert Conversation.objects.get(pk=group.pk).last_seq == 0


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty"), ("   \n", "empty"), ("x" * 4001, "at most 4,000"), ("a\x00b", "NUL"), (42, "string")],
)
def test_a_message_must_have_storable_text(group, alice, text, reason):
    with pytest.raises(services.InvalidMessage, match=reason):
        services.send_message(group, alice, text)


def test_4000_characters_is_the_longest_message(group, alice):
    assert len(services.send_message(group, alice, "x" * 4000).text) == 4000


def test_only_participants_send(group, dave):
    with pytest.raises(services.NotParticipant):
        services.send_message(group, dave, "let me in")


def test_the_author_edits_her_message_and_everyone_is_told(
    group, alice, bob, published, django_capture_on_commit_callbacks
):
    message = make_message(group, alice, "helo")
    with django_capture_on_commit_callbacks(execute=True):
        edited = services.edit_message(message, alice, "hello")
    assert edited.text == "hello"
    assert edited.edited is not None
    [event] = published
    assert (event.type, event.data) == (
        "message.edited",
        message_json(edited, edited=edited.edited.isoformat().replace("+00:00", "Z")),
    )
    with pytest.raises(services.NotAuthor):
        services.edit_message(message, bob, "mine now")


def test_a_deleted_message_becomes_a_tombstone_that_cannot_be_edited(
    group, alice, bob, published, django_capture_on_commit_callbacks
):
    message = make_message(group, alice, "oops")
    with pytest.raises(services.NotAuthor):
        services.delete_message(message, bob)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.delete_message(message, alice)
        assert not services.delete_message(message, alice)  # again: nothing more
    message.refresh_from_db()
    assert (message.text, message.deleted is not None, message.deleted_by_moderator) == ("", True, False)
    [event] = published
    assert event.type == "message.deleted"
    assert event.data == {
        "id": message.pk,
        "conversation": group.pk,
        "seq": 1,
        "author": alice.pk,
        "deleted": message.deleted.isoformat().replace("+00:00", "Z"),
        "by_moderator": False,
    }
    with pytest.raises(services.MessageDeleted):
        services.edit_message(message, alice, "undo")


def test_moderation_deletes_and_announces_each_message_once(
    group, alice, bob, published, django_capture_on_commit_callbacks
):
    spam, fine = make_message(group, bob, "spam"), make_message(group, alice, "fine")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.moderate_messages([spam]) == 1
        assert services.moderate_messages([spam]) == 0
    assert [(e.type, e.data["id"], e.data["by_moderator"]) for e in published] == [("message.deleted", spam.pk, True)]
    assert Message.objects.get(pk=fine.pk).deleted is None


# -- read marks and receipts ---------------------------------------------------------------------


def test_reading_moves_the_mark_forward_only_and_announces_one_coalesced_receipt(
    group, alice, bob, published, scheduler, django_capture_on_commit_callbacks
):
    messages = [make_message(group, alice, f"m{n}") for n in range(1, 5)]
    with django_capture_on_commit_callbacks(execute=True):
        assert services.mark_read(group, bob, messages[1].pk) == services.ReadState(2, 2)
        assert services.mark_read(group, bob, messages[3].pk) == services.ReadState(4, 0)
        assert services.mark_read(group, bob, messages[0].pk) == services.ReadState(4, 0)  # never backwards
    assert published == []  # coalesced: nothing before the window ends
    scheduler.advance(RECEIPT_WINDOW_SECS)
    assert [(e.topic, e.type, e.data) for e in published] == [
        (
            f"conversation.{group.pk}.receipts",
            "receipt.seen",
            {"conversation": group.pk, "member": bob.pk, "seq": 4, "message": messages[3].pk},
        ),
        (
            f"member.{bob.pk}.conversations",
            "conversation.read",
            {"conversation": group.pk, "last_read_seq": 4, "unread": 0},
        ),
    ]


def test_receipts_of_a_long_reading_session_only_ever_rise(
    group, alice, bob, published, scheduler, django_capture_on_commit_callbacks
):
    messages = [make_message(group, alice, f"m{n}") for n in range(1, 21)]
    for message in messages:
        with django_capture_on_commit_callbacks(execute=True):
            services.mark_read(group, bob, message.pk)
        scheduler.advance(RECEIPT_WINDOW_SECS / 4)
    scheduler.run_all()
    seen = [e.data["seq"] for e in published.of_type("receipt.seen")]
    assert seen == sorted(set(seen))
    assert seen[-1] == 20
    assert len(seen) <= 20 / 4 + 1


def test_marking_a_message_of_another_conversation_is_refused(group, direct, alice, bob):
    elsewhere = make_message(direct, alice)
    with pytest.raises(services.MessageNotFound):
        services.mark_read(group, bob, elsewhere.pk)


def test_unread_counts_skip_own_and_deleted_messages(group, alice, bob, carol):
    make_message(group, alice, "one")
    make_message(group, carol, "two")
    gone = make_message(group, carol, "three")
    services.send_message(group, bob, "mine")  # moves bob's mark to 4
    make_message(group, alice, "five")
    services.delete_message(gone, carol)
    rows = {row.member_id: row for row in queries.memberships(bob.pk)}
    assert rows[bob.pk].unread == 1
    assert {row.member_id: row.unread for row in queries.memberships(carol.pk)} == {
        carol.pk: 3
    }  # her own and the deleted one excepted


# -- typing ---------------------------------------------------------------------------------------


def test_typing_starts_are_announced_at_most_every_two_seconds_and_each_stop_once(group, bob, published):
    topic = f"conversation.{group.pk}.typing"
    assert services.set_typing(group, bob, True, now=100.0).announced
    assert services.set_typing(group, bob, True, now=101.0) == (False, True, 0.0)  # a refresh inside the throttle
    assert services.set_typing(group, bob, True, now=102.0).announced
    assert services.set_typing(group, bob, False, now=102.5).announced
    assert not services.set_typing(group, bob, False, now=102.6).announced  # stopped already
    # Inside the throttle and not shown: silent, and told to call again when the window ends.
    assert services.set_typing(group, bob, True, now=103.0) == (False, False, pytest.approx(1.0))
    assert services.set_typing(group, bob, True, now=104.0).announced
    assert [e.data for e in published.on(topic)] == [
        {"conversation": group.pk, "member": bob.pk, "name": "Bob", "typing": True, "expires_in": 6.0},
        {"conversation": group.pk, "member": bob.pk, "name": "Bob", "typing": True, "expires_in": 6.0},
        {"conversation": group.pk, "member": bob.pk, "typing": False, "reason": "stopped"},
        {"conversation": group.pk, "member": bob.pk, "name": "Bob", "typing": True, "expires_in": 6.0},
    ]


async def test_a_typing_mark_without_refresh_is_stopped_by_the_sweeper_once(group, bob, published):
    await sync_to_async(services.set_typing)(group, bob, True, now=100.0)
    await sync_to_async(services.set_typing)(group, bob, True, now=101.0)  # refreshed: expires at 107
    assert await sweeper.asweep_typing(now=106.9) == 0
    assert await sweeper.asweep_typing(now=107.0) == 1
    assert await sweeper.asweep_typing(now=200.0) == 0
    assert [e.data["typing"] for e in published] == [True, False]
    assert published[-1].data == {"conversation": group.pk, "member": bob.pk, "typing": False, "reason": "expired"}


def test_sending_a_message_stops_the_authors_typing(group, bob, published, django_capture_on_commit_callbacks):
    services.set_typing(group, bob, True)
    with django_capture_on_commit_callbacks(execute=True):
        services.send_message(group, bob, "done typing")
    assert [(e.type, e.data.get("reason")) for e in published] == [
        ("typing", None),
        ("message.created", None),
        ("typing", "sent"),
    ]


def test_leaving_stops_her_typing(group, bob, published, django_capture_on_commit_callbacks):
    services.set_typing(group, bob, True)
    with django_capture_on_commit_callbacks(execute=True):
        services.remove_participant(group, bob)
    assert published[-1].data == {"conversation": group.pk, "member": bob.pk, "typing": False, "reason": "left"}


def test_members_can_be_made_by_the_factory(db):
    assert make_conversation(make_member("x"), make_member("y")).participants.count() == 2
