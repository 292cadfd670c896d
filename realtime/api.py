"""POST /api/publish: the generic, authenticated way for other services to publish events.

Two doors, one behaviour: this DRF view (browsers with a session, the browsable API, the OpenAPI schema) and
realtime.api_lane (API clients with a token: no Django request cycle). Both validate with validated_events,
check CanPublish's permission and answer in the same JSON; tests/realtime/test_api_lane.py holds them to it.
"""

from typing import Any

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import permissions, serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from livesite.errors import body_of
from realtime.dispatcher import DispatchUnavailable
from realtime.events import MAX_TYPE_LENGTH, InvalidEvent, check_type
from realtime.publishing import publish_many
from realtime.topics import MAX_TOPIC_LENGTH, InvalidTopic, check_topic

MAX_BATCH = 500


class PublishUnavailable(APIException):
    status_code = 503
    default_code = "dispatch_unavailable"
    default_detail = "the real-time dispatcher is unreachable; retry shortly (events not listed as sent were not sent)"


PUBLISH_PERMISSION = "realtime.publish_event"


def can_publish(user: Any) -> bool:
    """Whether `user` may publish (superusers may; others need the permission, granted in the admin)."""
    return bool(user and user.is_authenticated and user.has_perm(PUBLISH_PERMISSION))


class CanPublish(permissions.BasePermission):
    """Members with the `realtime.publish_event` permission (staff get it by default through superuser)."""

    message = f"publishing needs the '{PUBLISH_PERMISSION}' permission"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return can_publish(request.user)


class EventSerializer(serializers.Serializer):
    topic = serializers.CharField(max_length=MAX_TOPIC_LENGTH)
    type = serializers.CharField(max_length=MAX_TYPE_LENGTH)
    data = serializers.JSONField()

    def validate_topic(self, value: str) -> str:
        try:
            return check_topic(value)
        except InvalidTopic as exc:
            raise ValidationError(str(exc)) from None

    def validate_type(self, value: str) -> str:
        try:
            return check_type(value)
        except InvalidEvent as exc:
            raise ValidationError(str(exc)) from None


class BatchSerializer(serializers.Serializer):
    events = EventSerializer(many=True, allow_empty=False, max_length=MAX_BATCH)


class PublishedSerializer(serializers.Serializer):
    ids = serializers.ListField(child=serializers.CharField())


class PublishView(APIView):
    permission_classes = [CanPublish]

    @extend_schema(
        request=EventSerializer,
        responses={202: PublishedSerializer},
        summary="Publish one event, or a batch as {'events': [...]}",
        examples=[
            OpenApiExample("one", value={"topic": "video.1.likes", "type": "like.created", "data": {"count": 3}}),
            OpenApiExample(
                "batch", value={"events": [{"topic": "news.flash", "type": "news.posted", "data": {"id": 1}}]}
            ),
        ],
    )
    def post(self, request: Request) -> Response:
        items = validated_events(body_of(request))
        try:
            events = publish_many(items)
        except InvalidEvent as exc:
            raise ValidationError({"data": [str(exc)]}) from None
        except DispatchUnavailable:
            raise PublishUnavailable from None
        return Response({"ids": [event.id for event in events]}, status=status.HTTP_202_ACCEPTED)


def validated_events(data: Any) -> list[tuple[str, str, Any]]:
    """(topic, type, data) of one event or of a batch {"events": [...]}; raises DRF's ValidationError. No I/O."""
    if isinstance(data, dict) and "events" in data:
        serializer: serializers.Serializer = BatchSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        items = serializer.validated_data["events"]
    else:
        serializer = EventSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        items = [serializer.validated_data]
    return [(item["topic"], item["type"], item["data"]) for item in items]
