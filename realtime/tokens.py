"""DRF tokens with a short memory: a service that publishes all day stops costing a query per POST.

Each process keeps the users of the tokens it recently saw for TOKEN_CACHE_SECS (REALTIME settings; 0: no
cache). Measured (bench/publish_api.py): on SQLite under Daphne every request runs in a fresh thread, so the
token query also opened and closed a database connection, about half of a single-event publish's CPU.

What that costs in freshness, and how it is bounded: in the process where a token is deleted, its user saved
(deactivated, permissions edited through the admin) or a group or permission deleted, the entries go at once
(signals); other processes, and changes made without signals (`QuerySet.update`, raw SQL), take effect
within TOKEN_CACHE_SECS. Unknown tokens are never remembered, so a wrong
key is refused every time and cannot fill the cache.
"""

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from rest_framework.authentication import TokenAuthentication

from realtime import conf

if TYPE_CHECKING:
    from django.db.models import Model
    from rest_framework.authtoken.models import Token  # At run time only after the app registry is ready.

MAX_ENTRIES = 10_000


class User(Protocol):
    """What realtime needs of a user. The user model is swappable (AUTH_USER_MODEL), and Django's `get_user`
    and DRF's `Token.user` are typed loosely (AbstractBaseUser, Any); any model with an integer key and
    Django's PermissionsMixin, as Django's own User, has all of this."""

    @property
    def pk(self) -> int: ...

    @property
    def is_active(self) -> bool: ...

    @property
    def is_staff(self) -> bool: ...

    def has_perm(self, perm: str, /) -> bool: ...

    def get_all_permissions(self) -> set[str]: ...


Found = tuple[User, "Token"]


class TokenCache:
    """key -> (user, token) for ttl_secs; thread-safe (DRF authenticates in request threads)."""

    def __init__(
        self, ttl_secs: float, *, max_entries: int = MAX_ENTRIES, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_secs = ttl_secs
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[str, tuple[float, User, Token]] = {}
        self._lock = threading.Lock()
        # Bumped by every forget/clear: a lookup that started before one must not put back what it read.
        self.generation = 0

    def get(self, key: str) -> Found | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, user, token = entry
        if self.clock() >= expires_at:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return user, token

    def put(self, key: str, user: User, token: "Token", *, generation: int | None = None) -> None:
        """Remember a lookup; skipped if `generation` (read before the lookup) is no longer current."""
        if self.ttl_secs <= 0:
            return
        with self._lock:
            if generation is not None and generation != self.generation:
                return
            self._entries.pop(key, None)
            while len(self._entries) >= self.max_entries:
                # Oldest first: dicts keep insertion order, and a re-put moves a key to the end.
                del self._entries[next(iter(self._entries))]
            self._entries[key] = (self.clock() + self.ttl_secs, user, token)

    def forget(self, *, key: str | None = None, user_id: object = None) -> None:
        """Drop one token's entry, or every entry of one user."""
        with self._lock:
            self.generation += 1
            if key is not None:
                self._entries.pop(key, None)
            if user_id is not None:
                for stale in [k for k, (_, user, _) in self._entries.items() if user.pk == user_id]:
                    del self._entries[stale]

    def forget_matching(self, matches: Callable[[str], bool]) -> None:
        """Drop every entry whose key `matches` (a revocation names a token by its digest, not its key)."""
        with self._lock:
            self.generation += 1
            for stale in [key for key in self._entries if matches(key)]:
                del self._entries[stale]

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


_cache: TokenCache | None = None


def get_cache() -> TokenCache:
    global _cache
    if _cache is None:
        _cache = TokenCache(conf.get("TOKEN_CACHE_SECS"))
    return _cache


def reset_cache() -> None:
    """Forget the process's cache (settings changed, tests)."""
    global _cache
    _cache = None


def lookup(key: str) -> Found | None:
    """Sync: (user, token) of an active user's token, from the cache or the database; None if refused."""
    return _through_cache(key, _active_token)


def cached(key: str) -> Found | None:
    """(user, token) if the cache holds this key now; no database access (for async callers)."""
    return get_cache().get(key)


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's TokenAuthentication (same header, same errors), answered from the cache when it can be."""

    def authenticate_credentials(self, key: str) -> Found:
        # DRF's own lookup raises AuthenticationFailed with its messages; so it is never None here.
        return _through_cache(key, super().authenticate_credentials)  # type: ignore[return-value]


def _active_token(key: str) -> Found | None:
    from rest_framework.authtoken.models import Token  # Imported here: models load after the app registry.

    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None or not token.user.is_active:
        return None
    return token.user, token


def _through_cache(key: str, load: Callable[[str], Found | None]) -> Found | None:
    cache = get_cache()
    hit = cache.get(key)
    if hit is not None:
        return hit
    generation = cache.generation
    found = load(key)
    if found is not None and cache.ttl_secs > 0:
        user, token = found
        # Load the user's permissions now, in this sync code: Django's backend keeps them on the user object,
        # so has_perm on a cached user needs no query, and async code may call it (realtime.api_lane).
        user.get_all_permissions()
        cache.put(key, user, token, generation=generation)
    return found


# -- invalidation (connected in RealtimeConfig.ready) -----------------------------------------------


def on_token_deleted(sender: type["Token"], instance: "Token", **kwargs: object) -> None:
    if _cache is not None:
        _cache.forget(key=instance.key)


def on_user_changed(sender: "type[Model]", instance: "Model", **kwargs: object) -> None:
    if _cache is not None:
        _cache.forget(user_id=instance.pk)


def on_permissions_changed(sender: "type[Model]", instance: object, **kwargs: object) -> None:
    # A user's or a group's permissions, a user's groups, a group or a permission deleted (its rows go
    # without m2m_changed): cheaper to start over than to work out whom.
    if _cache is not None:
        _cache.clear()
