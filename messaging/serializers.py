"""How conversations and messages look in the API and in events, and what the API accepts."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import empty
from rest_framework.utils import html

from likes.models import display_name
from likes.serializers import MemberSerializer, StrictCharField
from messaging.models import MAX_MESSAGE_LENGTH, MAX_TITLE_LENGTH, Message


class MessageSerializer(serializers.ModelSerializer):
    conversation = serializers.IntegerField(source="conversation_id", read_only=True)
    seq = serializers.IntegerField(read_only=True, help_text="1, 2, 3... in the conversation's commit order")
    author = MemberSerializer(read_only=True, allow_null=True, help_text="null once the author's account is gone")
    text = serializers.CharField(read_only=True, help_text="empty once deleted")
    edited = serializers.DateTimeField(read_only=True, allow_null=True)
    deleted = serializers.DateTimeField(read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = ["id", "conversation", "seq", "author", "text", "created", "edited", "deleted"]
        read_only_fields = fields


def message_data(message: Message) -> dict[str, Any]:
    """A message as the API and the message events show it."""
    return dict(MessageSerializer(message).data)


class ParticipantSerializer(serializers.Serializer):
    id = serializers.IntegerField(help_text="the member's id")
    name = serializers.CharField()
    last_read_seq = serializers.IntegerField(help_text="the seq of the last message she has read (0: none)")


class ConversationSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=["direct", "group"])
    title = serializers.CharField(help_text="empty for one-to-one conversations (pages show the other's name)")
    created = serializers.DateTimeField()
    updated = serializers.DateTimeField(help_text="the last message's time, or the creation's")
    last_seq = serializers.IntegerField(help_text="the newest message's seq (0: no message yet)")
    last_read_seq = serializers.IntegerField(help_text="yours: the seq of the last message you have read")
    unread = serializers.IntegerField(help_text="messages of others after last_read_seq, deleted ones excepted")
    participants = ParticipantSerializer(many=True)
    last_message = MessageSerializer(allow_null=True)


class ConversationPageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True, help_text="the next page (less recent conversations), or null")
    previous = serializers.CharField(allow_null=True, help_text="the previous page, or null")
    results = ConversationSerializer(many=True)


class MessagePageSerializer(serializers.Serializer):
    older = serializers.CharField(allow_null=True, help_text="the page of messages before these, or null")
    newer = serializers.CharField(allow_null=True, help_text="the page of messages after these, or null")
    results = MessageSerializer(many=True, help_text="oldest first: the newest message is last")


MAX_LISTED_IDS = 1000


@extend_schema_field(
    {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": MAX_LISTED_IDS}
)
class MemberIdsField(serializers.Field):
    """A list of member ids, with ONE flat error message (DRF's ListField nests its items' errors by position,
    which the API's error shape, {field: [messages]}, does not allow)."""

    default_error_messages = {
        "invalid": "a list of 1 to {limit} member ids (positive whole numbers)",
    }

    def get_value(self, dictionary: Any) -> Any:
        if html.is_html_input(dictionary):  # form bodies: every value of the field
            return dictionary.getlist(self.field_name) if self.field_name in dictionary else empty
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any) -> list[int]:
        if not isinstance(data, list) or not 1 <= len(data) <= MAX_LISTED_IDS:
            self.fail("invalid", limit=MAX_LISTED_IDS)
        ids = []
        for item in data:
            if isinstance(item, str) and item.isdigit() and len(item) <= 18:
                item = int(item)
            if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item < 2**63:
                self.fail("invalid", limit=MAX_LISTED_IDS)
            ids.append(item)
        return ids

    def to_representation(self, value: Any) -> Any:
        return value


class ConversationInputSerializer(serializers.Serializer):
    participants = MemberIdsField(
        help_text="member ids besides yourself; one and no title: a one-to-one conversation (the existing one, if any)",
    )
    title = StrictCharField(
        max_length=MAX_TITLE_LENGTH, required=False, allow_blank=True, help_text="a group's name (optional)"
    )


class MessageInputSerializer(serializers.Serializer):
    text = StrictCharField(
        max_length=MAX_MESSAGE_LENGTH,
        help_text=f"1 to {MAX_MESSAGE_LENGTH} characters once surrounding whitespace is trimmed",
    )


class MessagesQuerySerializer(serializers.Serializer):
    before = serializers.IntegerField(
        min_value=1, required=False, help_text="only messages with a seq below this (older ones)"
    )
    after = serializers.IntegerField(
        min_value=0, required=False, help_text="only messages with a seq above this (newer ones)"
    )
    limit = serializers.IntegerField(min_value=1, max_value=100, default=50, help_text="at most this many")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "before" in attrs and "after" in attrs:
            raise serializers.ValidationError("give before or after, not both")
        return attrs


class TypingInputSerializer(serializers.Serializer):
    typing = serializers.BooleanField(help_text="true while typing (refresh it at least every 6 s), false to stop")

    def to_internal_value(self, data: Any) -> Any:
        # Only JSON booleans: DRF's BooleanField also takes "yes", 1 or "on".
        if isinstance(data, dict) and "typing" in data and not isinstance(data["typing"], bool):
            raise serializers.ValidationError({"typing": ["must be true or false"]})
        return super().to_internal_value(data)


class TypingResultSerializer(serializers.Serializer):
    typing = serializers.BooleanField()
    announced = serializers.BooleanField(
        help_text="whether this call sent a `typing` event (at most one start per member per 2 s, one stop each)"
    )
    shown = serializers.BooleanField(help_text="whether the others see you typing now")
    retry_in = serializers.FloatField(
        help_text="typing but not shown (a start right after a stop): call again in this many seconds to be shown"
    )
    expires_in = serializers.FloatField(help_text="seconds before you stop typing without another call")


class ReadInputSerializer(serializers.Serializer):
    message = serializers.IntegerField(min_value=1, help_text="the id of the last message you have read")


class ParticipantInputSerializer(serializers.Serializer):
    member = serializers.IntegerField(
        min_value=1, max_value=2**63 - 1, help_text="the id of the member to add (an active account)"
    )


class ReadResultSerializer(serializers.Serializer):
    last_read_seq = serializers.IntegerField(help_text="your read mark now: it never goes backwards")
    unread = serializers.IntegerField()


def participant_data(member: Any, last_read_seq: int) -> dict[str, Any]:
    return {"id": member.pk, "name": display_name(member), "last_read_seq": last_read_seq}
