"""Who may read a conversation's topics: participants only, in ONE query per check, whatever the number of topics."""

from collections.abc import Iterator
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


# -- the per-worker cache of participations (messaging.access) ---------------------------------------------------


def _sync_check(topics: list[str], member_id: int) -> bool:
    """The core's check from a sync test: the rule's query runs on this thread, so django_assert_num_queries sees it."""
    from asgiref.sync import async_to_sync

    try:
        async_to_sync(policies.acheck_read)(topics, member_id)
    except ForbiddenTopic:
        return False
    return True


@pytest.fixture
def redis_versions(settings: Any) -> Iterator[str]:
    """Versions in the real Redis of these machines, under a prefix of this test's own (as a cluster's workers)."""
    import uuid

    from realtime import stores

    settings.REDIS_URL = "redis://127.0.0.1:6379/0"
    settings.REDIS_KEY_PREFIX = f"test-access-{uuid.uuid4().hex[:8]}"
    yield settings.REDIS_KEY_PREFIX
    client = stores.client()
    for key in client.scan_iter(f"{settings.REDIS_KEY_PREFIX}:*"):
        client.delete(key)


def test_further_checks_of_a_conversation_cost_no_query(conversations, bob, carol, django_assert_num_queries):
    ab, bc = conversations
    with django_assert_num_queries(1):
        assert _sync_check(topics_of(ab)[:1], bob.pk)
    # The same stream taking the typing and receipts topics, then a reconnect with all three: from the cache.
    with django_assert_num_queries(0):
        assert _sync_check(topics_of(ab)[1:2], bob.pk)
        assert _sync_check(topics_of(ab)[2:], bob.pk)
        assert _sync_check(topics_of(ab), bob.pk)
    # A conversation not asked yet costs its one query, whatever else the check names.
    with django_assert_num_queries(1):
        assert _sync_check(topics_of(ab, bc), bob.pk)
    with django_assert_num_queries(1):
        assert _sync_check(topics_of(bc), carol.pk)  # per member
    with django_assert_num_queries(0):
        assert _sync_check(topics_of(ab, bc), bob.pk)


def test_refusals_are_never_cached_so_a_member_just_added_may_subscribe_at_once(
    conversations, alice, django_assert_num_queries, django_capture_on_commit_callbacks
):
    from messaging import services

    _, bc = conversations
    for _ in range(2):
        with django_assert_num_queries(1):
            assert not _sync_check(topics_of(bc), alice.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.add_participants(bc, [alice])
    with django_assert_num_queries(1):
        assert _sync_check(topics_of(bc), alice.pk)


def test_a_removal_is_never_served_from_the_cache(conversations, bob, carol, django_capture_on_commit_callbacks):
    from messaging import services

    ab, bc = conversations
    assert _sync_check(topics_of(ab, bc), bob.pk)
    assert _sync_check(topics_of(bc), carol.pk)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.remove_participant(bc, bob)
    assert not _sync_check(topics_of(bc), bob.pk)
    assert _sync_check(topics_of(ab), bob.pk)  # his other conversation stays his
    assert _sync_check(topics_of(bc), carol.pk)


def test_a_removal_by_another_process_invalidates_this_workers_entries_through_redis(
    redis_versions, conversations, bob, django_assert_num_queries
):
    from messaging import access
    from messaging.models import Participant

    _, bc = conversations
    assert _sync_check(topics_of(bc), bob.pk)
    with django_assert_num_queries(0):
        assert _sync_check(topics_of(bc), bob.pk)  # cached here, behind a version read from Redis
    # Another process removes him: its own access module changes the version in Redis, not this cache.
    access.RedisVersions("redis://127.0.0.1:6379/0").change([bc.pk])
    Participant.objects.filter(conversation=bc, member=bob).delete()
    assert len(access.get_cache()) == 1  # still here, and stale
    with django_assert_num_queries(1):
        assert not _sync_check(topics_of(bc), bob.pk)


def test_an_entry_filled_while_a_removal_commits_is_never_used(monkeypatch, conversations, bob):
    """The check reads the version, then its query still sees him; the removal commits and changes the version
    (after commit) before the check stores what it found: the entry is stale at once. (That one check's answer is
    the revocation's to take back: it follows the version change.)"""
    from messaging import access
    from messaging.models import Participant

    _, bc = conversations
    real = access._aparticipating

    async def query_then_removed(member_id: int, ids: list[int]) -> set[int]:
        found = await real(member_id, ids)
        await sync_to_async(Participant.objects.filter(conversation=bc, member=bob).delete)()
        await sync_to_async(access.change_versions)([bc.pk])
        return found

    monkeypatch.setattr(access, "_aparticipating", query_then_removed)
    assert _sync_check(topics_of(bc), bob.pk)  # the one check that raced the removal
    monkeypatch.setattr(access, "_aparticipating", real)
    assert not _sync_check(topics_of(bc), bob.pk)


def test_without_a_cache_every_check_asks_the_database(settings, conversations, bob, django_assert_num_queries):
    settings.MESSAGING = {**settings.MESSAGING, "ACCESS_CACHE_SIZE": 0}
    for _ in range(2):
        with django_assert_num_queries(1):
            assert _sync_check(topics_of(conversations[0]), bob.pk)


def test_an_unreadable_version_store_sends_every_check_to_the_database(
    settings, conversations, bob, django_assert_num_queries, caplog
):
    from messaging import access

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    errors = access.stats["version_errors"]
    for _ in range(2):
        with django_assert_num_queries(1):
            assert _sync_check(topics_of(conversations[0]), bob.pk)
    assert access.stats["version_errors"] == errors + 2
    assert "access versions unreadable" in caplog.text
    assert len(access.get_cache()) == 0


def test_a_removal_that_cannot_reach_redis_changes_nothing(settings, conversations, bob, published):
    from messaging import services
    from messaging.models import Participant

    _, bc = conversations
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    with pytest.raises(services.AccessUnavailable):
        services.remove_participant(bc, bob)
    assert Participant.objects.filter(conversation=bc, member=bob).exists()
    assert published.revoked == []
    assert list(published) == []


def test_the_cache_keeps_its_size_and_trusts_an_entry_only_for_its_version_and_lifetime():
    from messaging.access import AccessCache

    cache = AccessCache(size=2, ttl_secs=10.0)
    assert cache.put(1, 10, "0", now=0.0) == 0
    assert cache.put(2, 10, "0", now=0.0) == 0
    assert cache.get(1, 10, "0", now=1.0)  # 1 is now the most recently used
    assert cache.put(3, 10, "0", now=1.0) == 1  # evicts 2, the least recently used
    assert len(cache) == 2
    assert not cache.get(2, 10, "0", now=1.0)
    assert cache.get(3, 10, "0", now=10.9)
    assert not cache.get(3, 10, "0", now=11.0)  # lived its 10 s
    assert not cache.get(1, 10, "v2", now=2.0)  # the conversation's version changed
    assert not cache.get(1, 10, "0", now=2.0)  # and the stale entry is gone for good
    cache.put(4, 11, "0", now=0.0)
    cache.forget_conversations([11])
    assert len(cache) == 0
    assert AccessCache(size=0, ttl_secs=10.0).put(1, 10, "0", now=0.0) == 0


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"ACCESS_CACHE_SIZE": -1}, "messaging.E006"),
        ({"ACCESS_CACHE_SIZE": "big"}, "messaging.E006"),
        ({"ACCESS_CACHE_SECS": 0}, "messaging.E007"),
        ({"ACCESS_CACHE_SECS": 86_400}, "messaging.E007"),
    ],
)
def test_bad_cache_settings_are_system_check_errors(settings, changes, problem):
    from messaging.checks import check_messaging_settings

    settings.MESSAGING = {**settings.MESSAGING, **changes}
    assert [error.id for error in check_messaging_settings(None)] == [problem]
