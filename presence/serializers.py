"""The shapes of GET /api/presence: its query (?members=1,2,3) and each member's status."""

from typing import Any

from rest_framework import serializers

from presence import conf
from presence.status import OFFLINE, ONLINE


class MemberIdsField(serializers.Field):
    """A comma-separated list of member ids, e.g. `1,2,3`; repeats are kept once, in first-seen order."""

    default_error_messages = {
        "required": "give the members to look up, e.g. ?members=1,2,3",
        "empty": "give at least one member id, e.g. ?members=1,2,3",
        "not_an_id": "{value!r} is not a member id: ids are positive integers separated by commas, e.g. 1,2,3",
        "too_many": "at most {limit} members per request (got {count}): split the lookup into several requests",
    }

    def to_internal_value(self, data: Any) -> list[int]:
        if not isinstance(data, str):
            self.fail("not_an_id", value=data)
        parts = [part.strip() for part in data.split(",")]
        if not any(parts):
            self.fail("empty")
        ids = []
        for part in parts:
            # isdecimal() refuses signs, spaces and exponents; the length cap keeps int() cheap and in range.
            if not (part.isascii() and part.isdecimal()) or len(part) > 18 or int(part) == 0:
                self.fail("not_an_id", value=part)
            ids.append(int(part))
        ids = list(dict.fromkeys(ids))
        limit = conf.get("MAX_MEMBERS_PER_REQUEST")
        if len(ids) > limit:
            self.fail("too_many", limit=limit, count=len(ids))
        return ids

    def to_representation(self, value: list[int]) -> str:
        return ",".join(str(member) for member in value)


class PresenceQuerySerializer(serializers.Serializer):
    members = MemberIdsField(help_text="comma-separated member ids, at most MAX_MEMBERS_PER_REQUEST (200)")


class MemberStatusSerializer(serializers.Serializer):
    member = serializers.IntegerField()
    status = serializers.ChoiceField(choices=[ONLINE, OFFLINE])
    last_seen = serializers.FloatField(allow_null=True, help_text="epoch seconds of the last heartbeat; null: never")
    changed_at = serializers.FloatField(
        allow_null=True,
        help_text="epoch seconds of the last transition; apply a presence.changed event only if its changed_at is "
        "greater than or equal to this",
    )


class PresenceListSerializer(serializers.Serializer):
    members = MemberStatusSerializer(many=True)
