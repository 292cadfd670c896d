"""Presence: placeholder handler until the presence issue lands (it records nothing yet)."""


async def arecord_heartbeats(member_ids: list[int]) -> None:
    return None
