"""Who may read a conversation's topics: its participants, decided with ONE database query per check. Async.

The core calls `participants_only` (the `aread` rule of the `conversation.{id}.*` namespace, declared in
MessagingConfig.ready) with every conversation topic of one connect or subscription request at once, after
the sync rule (signed-in members only) let them through.
"""

from collections.abc import Mapping

from channels.db import database_sync_to_async

from messaging import queries

# The ids a BigAutoField can hold; a longer number names no conversation (and would overflow the query).
_MAX_ID_DIGITS = 18

_aparticipating = database_sync_to_async(queries.participating)


async def participants_only(member_id: int | None, params: list[Mapping[str, str]]) -> list[bool]:
    """Async: for each topic's params (`id`: the conversation), whether `member_id` takes part in it."""
    ids = [
        int(p["id"]) if len(p.get("id", "")) <= _MAX_ID_DIGITS and p.get("id", "").isdigit() else None for p in params
    ]
    wanted = sorted({conversation_id for conversation_id in ids if conversation_id is not None})
    if member_id is None or not wanted:
        return [False] * len(params)
    found = await _aparticipating(member_id, wanted)
    return [conversation_id in found for conversation_id in ids]
