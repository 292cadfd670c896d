"""Revocation that takes effect: a stream whose credential stops being valid is closed, on any worker, at once.

Streams are authorised when they open; without this, one kept receiving a member's private topics after she
signed out or was deactivated. What revokes (connected in RealtimeConfig.ready):
- signing out revokes that session; deleting a DRF token revokes that token;
- deactivating a member or changing her password revokes every stream of hers (Django invalidates her
  sessions too).
A revocation is one control message to every worker (the channel-layer group CONTROL_GROUP, which every
worker joins for its life); each closes the matching streams with `event: revoked` {"reason"} and the end of
the response, and the client reconnects with whatever credentials it still has. Credentials are named by a
digest, never stored or sent as the secret itself.
"""

import hashlib
import json
import logging
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction

logger = logging.getLogger(__name__)

# Not a topic (no client may subscribe to it): a channel-layer group of every worker, for control messages.
CONTROL_GROUP = "realtime-control"


def session_credential(session_key: str) -> str:
    return "session:" + hashlib.sha256(session_key.encode()).hexdigest()[:24]


def token_credential(key: str) -> str:
    return "token:" + hashlib.sha256(key.encode()).hexdigest()[:24]


def control_message(
    *, member_id: int | None = None, credential: str | None = None, reason: str, topics: list[str] | None = None
) -> bytes:
    order: dict[str, Any] = {"member": member_id, "credential": credential, "reason": reason}
    if topics is not None:
        order["topics"] = topics
    return json.dumps(order).encode()


async def arevoke(*, member_id: int | None = None, credential: str | None = None, reason: str) -> None:
    """Async: close every stream of `member_id`, or opened with `credential`, on every worker."""
    from realtime.dispatcher import get_dispatcher  # Imported here: the dispatcher needs the channel layer.

    message = control_message(member_id=member_id, credential=credential, reason=reason)
    await get_dispatcher().asend_events([(CONTROL_GROUP, message)])


async def arevoke_topics(member_id: int, topics: list[str], *, reason: str) -> None:
    """Async: take `topics` from every stream of `member_id` on every worker, at once; each such stream gets
    `event: unsubscribed` {"topics", "reason"} and nothing more from them (the application decided she may no
    longer read them, e.g. removed from a conversation). The stream itself stays open."""
    from realtime.dispatcher import get_dispatcher

    message = control_message(member_id=member_id, reason=reason, topics=topics)
    await get_dispatcher().asend_events([(CONTROL_GROUP, message)])


def revoke_topics(member_id: int, topics: list[str], *, reason: str) -> None:
    """Sync: arevoke_topics after the current transaction commits."""

    def send() -> None:
        try:
            async_to_sync(arevoke_topics)(member_id, topics, reason=reason)
        except Exception:
            logger.exception("topic revocation (%s) could not reach the workers", reason)

    transaction.on_commit(send)


def revoke(*, member_id: int | None = None, credential: str | None = None, reason: str) -> None:
    """Sync: arevoke, after the current transaction commits (a rolled-back change revokes nothing)."""

    def send() -> None:
        try:
            async_to_sync(arevoke)(member_id=member_id, credential=credential, reason=reason)
        except Exception:
            # Logged loudly: the streams stay open until they reconnect. Raising would undo nothing.
            logger.exception("revocation (%s) could not reach the workers", reason)

    transaction.on_commit(send)


# -- signal receivers (connected in RealtimeConfig.ready) -------------------------------------------


def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    session = getattr(request, "session", None)
    if session is not None and session.session_key:
        revoke(credential=session_credential(session.session_key), reason="signed_out")


def on_token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoke(credential=token_credential(instance.key), reason="token_revoked")


def on_user_saving(sender: Any, instance: Any, **kwargs: Any) -> None:
    # pre_save: compare with what is stored, to tell a deactivation or a new password from any other save.
    if instance.pk is None:
        return
    stored = sender.objects.filter(pk=instance.pk).values("is_active", "password").first()
    if stored is None:
        return
    if stored["is_active"] and not instance.is_active:
        revoke(member_id=instance.pk, reason="deactivated")
    elif stored["password"] != instance.password:
        revoke(member_id=instance.pk, reason="password_changed")


def on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    revoke(member_id=instance.pk, reason="deleted")
