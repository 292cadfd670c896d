"""Who may read a conversation's topics: participants only, in ONE query per check, whatever the number of topics."""

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from realtime import policies
from realtime.topics import ForbiddenTopic
from tests.messaging.factories import make_conversation

pytestmark = pytest.mark.django_db(transaction=True)


async def _check(topics: list[str], member_id: int | None) -> tuple[bool, int]:
    """Whether the core's check lets `member_id` read `topics`, and how many queries it made."""

    def run() -> tuple[bool, int]:
        from asgiref.sync import async_to_sync

        with CaptureQueriesContext(connection) as queries:
            try:
                async_to_sync(policies.acheck_read)(topics, member_id)
            except ForbiddenTopic:
                return False, len(queries)
        return True, len(queries)

    return await sync_to_async(run, thread_sensitive=True)()


@pytest.fixture
def conversations(alice: Any, bob: Any, carol: Any) -> tuple[Any, Any]:
    return make_conversation(alice, bob, title="ab"), make_conversation(bob, carol, title="bc")


def topics_of(*conversations: Any) -> list[str]:
    return [f"conversation.{c.pk}.{name}" for c in conversations for name in ("messages", "typing", "receipts")]


async def test_participants_read_every_topic_of_their_conversations_in_one_query(conversations, bob):
    assert await _check(topics_of(*conversations), bob.pk) == (True, 1)


async def test_anyone_else_is_refused(conversations, alice, carol):
    ab, bc = conversations
    assert (await _check(topics_of(bc), alice.pk))[0] is False
    assert (await _check(topics_of(ab), carol.pk))[0] is False
    # One forbidden topic among allowed ones refuses the whole request.
    assert (await _check([*topics_of(ab), f"conversation.{bc.pk}.typing"], alice.pk))[0] is False


async def test_anonymous_streams_and_unknown_or_huge_ids_are_refused_without_a_query(conversations):
    assert await _check(topics_of(conversations[0]), None) == (False, 0)


async def test_an_id_no_conversation_can_have_is_refused(alice):
    assert (await _check(["conversation.99999999999999999999999.messages"], alice.pk))[0] is False
    assert (await _check(["conversation.424242.messages"], alice.pk))[0] is False


def test_the_publish_api_may_not_send_to_conversations():
    with pytest.raises(policies.PublishRefused, match=r"messaging\.services"):
        policies.check_api_publish("conversation.1.messages", "message.created", ["news"])


def test_typing_topics_are_never_kept_in_history():
    from realtime import history

    assert not history.settings().keeps("conversation.12.typing")
    assert history.settings().keeps("conversation.12.messages")
