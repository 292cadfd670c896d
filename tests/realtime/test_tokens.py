"""The token cache: a token's user is remembered for a while, forgotten when it changes, never when unknown."""

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed

from realtime import tokens
from realtime.tokens import CachedTokenAuthentication, TokenCache
from tests.clocks import FakeClock


class Member:
    def __init__(self, pk: int) -> None:
        self.pk = pk


def test_an_entry_lives_for_the_ttl_only() -> None:
    clock = FakeClock()
    cache = TokenCache(10, clock=clock)
    cache.put("k", Member(1), "token")
    clock.now += 9.9
    assert cache.get("k")[0].pk == 1
    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_a_zero_ttl_remembers_nothing() -> None:
    cache = TokenCache(0)
    cache.put("k", Member(1), "token")
    assert cache.get("k") is None


def test_the_cache_is_bounded_oldest_out() -> None:
    cache = TokenCache(10, max_entries=2, clock=FakeClock())
    for key, pk in [("a", 1), ("b", 2), ("c", 3)]:
        cache.put(key, Member(pk), key)
    assert cache.get("a") is None
    assert [cache.get(key)[0].pk for key in ("b", "c")] == [2, 3]


def test_forget_by_key_or_by_user() -> None:
    cache = TokenCache(10, clock=FakeClock())
    cache.put("a", Member(1), "a")
    cache.put("b", Member(1), "b")
    cache.put("c", Member(2), "c")
    cache.forget(key="c")
    assert cache.get("c") is None
    cache.forget(user_id=1)
    assert len(cache) == 0


@pytest.fixture
def publisher(db: Any) -> Token:
    user = User.objects.create_user("svc")
    user.user_permissions.add(Permission.objects.get(codename="publish_event"))
    return Token.objects.create(user=user)


def _authenticate(key: str) -> Any:
    return CachedTokenAuthentication().authenticate_credentials(key)[0]


def test_a_known_token_is_looked_up_once(publisher: Token, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(3):  # the token and its user, the user's permissions, its groups'
        assert _authenticate(publisher.key).pk == publisher.user_id
    with django_assert_num_queries(0):
        user = _authenticate(publisher.key)
        assert user.pk == publisher.user_id
        assert tokens.lookup(publisher.key)[0].pk == publisher.user_id
        # Loaded with the user: async code may ask (realtime.api_lane).
        assert user.has_perm("realtime.publish_event")


def test_an_unknown_token_is_refused_every_time(db: Any, django_assert_num_queries: Any) -> None:
    for _ in range(2):
        with django_assert_num_queries(1), pytest.raises(AuthenticationFailed):
            _authenticate("not-a-token")
    assert len(tokens.get_cache()) == 0


def test_a_deleted_token_is_refused_at_once(publisher: Token) -> None:
    _authenticate(publisher.key)
    publisher.delete()
    with pytest.raises(AuthenticationFailed):
        _authenticate(publisher.key)


def test_a_deactivated_user_is_refused_at_once(publisher: Token) -> None:
    _authenticate(publisher.key)
    User.objects.filter(pk=publisher.user_id).update(is_active=False)  # no signal: still cached
    assert _authenticate(publisher.key).is_active
    user = User.objects.get(pk=publisher.user_id)
    user.save()  # the admin saves the user: post_save
    with pytest.raises(AuthenticationFailed):
        _authenticate(publisher.key)


def test_a_permission_change_is_seen_at_once(publisher: Token) -> None:
    assert _authenticate(publisher.key).has_perm("realtime.publish_event")
    publisher.user.user_permissions.clear()
    assert not _authenticate(publisher.key).has_perm("realtime.publish_event")


def test_the_ttl_comes_from_the_settings(settings: Any, publisher: Token, django_assert_num_queries: Any) -> None:
    settings.REALTIME = {**getattr(settings, "REALTIME", {}), "TOKEN_CACHE_SECS": 0}
    _authenticate(publisher.key)
    with django_assert_num_queries(1):  # the token and its user; no permissions loaded for a cache of none
        _authenticate(publisher.key)


def test_a_deleted_group_takes_its_permission_at_once(db: Any) -> None:
    user = User.objects.create_user("svc")
    group = Group.objects.create(name="publishers")
    group.permissions.add(Permission.objects.get(codename="publish_event"))
    user.groups.add(group)
    key = Token.objects.create(user=user).key
    assert _authenticate(key).has_perm("realtime.publish_event")
    group.delete()  # its membership rows go without m2m_changed
    assert not _authenticate(key).has_perm("realtime.publish_event")


def test_a_lookup_that_raced_a_revocation_is_not_remembered() -> None:
    cache = TokenCache(10, clock=FakeClock())
    generation = cache.generation  # a lookup starts and reads the token ...
    cache.forget(key="k")  # ... meanwhile the token is deleted ...
    cache.put("k", Member(1), "k", generation=generation)  # ... and the lookup would put back what it read
    assert cache.get("k") is None
    cache.put("k", Member(1), "k", generation=cache.generation)
    assert cache.get("k") is not None
