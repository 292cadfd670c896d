"""How videos, comments and members look in the API and in events, and what the API accepts."""

from typing import Any

from rest_framework import serializers

from likes.models import MAX_COMMENT_LENGTH, Comment, LiveVideo, display_name


class StrictCharField(serializers.CharField):
    """A CharField that takes only JSON strings (DRF's also turns numbers into text)."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class MemberSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.SerializerMethodField()

    def get_name(self, member: Any) -> str:
        return display_name(member)


class CommentSerializer(serializers.ModelSerializer):
    video = serializers.IntegerField(source="video_id", read_only=True)
    member = MemberSerializer(read_only=True)

    class Meta:
        model = Comment
        fields = ["id", "video", "member", "text", "created", "hidden"]
        read_only_fields = fields


class CommentInputSerializer(serializers.Serializer):
    text = StrictCharField(
        max_length=MAX_COMMENT_LENGTH,
        help_text=f"1 to {MAX_COMMENT_LENGTH} characters once surrounding whitespace is trimmed",
    )


class VideoSerializer(serializers.ModelSerializer):
    owner = MemberSerializer(read_only=True)
    like_count = serializers.IntegerField(read_only=True)
    comment_count = serializers.IntegerField(read_only=True, help_text="visible comments")
    viewer_count = serializers.SerializerMethodField(help_text="live viewers across all workers; null if unknown")

    class Meta:
        model = LiveVideo
        fields = [
            "id",
            "title",
            "slug",
            "description",
            "status",
            "started_at",
            "ended_at",
            "owner",
            "like_count",
            "comment_count",
            "viewer_count",
        ]
        read_only_fields = fields

    def get_viewer_count(self, video: LiveVideo) -> int | None:
        return self.context.get("viewer_counts", {}).get(video.pk)


class VideoQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=LiveVideo.Status.choices, required=False, help_text="only these videos")


class LikeResultSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="the video's exact like total, this like included")


class ErrorSerializer(serializers.Serializer):
    """Every API error (livesite.errors): what was wrong and how to fix it, and a stable code."""

    detail = serializers.CharField()
    code = serializers.CharField()
    # Named as the API names it; this serializer only describes the schema, so shadowing
    # Serializer.errors (which it never uses) is harmless.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="validation errors only: messages per field",
    )
