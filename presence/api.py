"""GET /api/presence?members=1,2,3: several members' presence in one call.

How a page shows live dots without missing a change: open the stream, subscribe to `presence.member.{id}` for
each member shown, THEN call this endpoint. Keep each member's `changed_at` from the answer and apply a
`presence.changed` event only if its `changed_at` is greater than or equal to the one you hold (then hold the
event's). A change that happened before the GET is already in the answer, and its event, if it arrives late,
is ignored; a change after the GET arrives as an event, because the subscription was in place first. Each
member's `changed_at` strictly increases from one transition to the next, across all workers.
"""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from redis.exceptions import RedisError
from rest_framework import permissions
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from presence import services
from presence.serializers import PresenceListSerializer, PresenceQuerySerializer


class PresenceUnavailable(APIException):
    status_code = 503
    default_code = "presence_unavailable"
    default_detail = "the presence store (Redis) is unreachable; retry shortly"


class MayReadPresence(permissions.BasePermission):
    """The audience of the presence.member.{id} topics: signed-in members, or anyone with PRESENCE PUBLIC."""

    message = "presence is for signed-in members (last-seen times are personal): sign in, or send a token"

    def has_permission(self, request: Request, view: APIView) -> bool:
        return services.may_read(request.user.pk if request.user.is_authenticated else None, {})


class PresenceView(APIView):
    # The same audience as the presence.member.{id} topics (realtime.policies), by the same rule.
    permission_classes = [MayReadPresence]

    @extend_schema(
        parameters=[
            OpenApiParameter("members", str, required=True, description="comma-separated member ids, e.g. 1,2,3")
        ],
        responses={
            200: PresenceListSerializer,
            400: OpenApiResponse(description="bad `members`: the JSON error lists why under errors.members"),
            403: OpenApiResponse(description="not signed in, and presence is not public (PRESENCE_PUBLIC)"),
            503: OpenApiResponse(
                description="the presence store is unreachable (JSON error, code presence_unavailable)"
            ),
        },
        summary="Presence (status, last_seen, changed_at) of up to 200 members",
    )
    def get(self, request: Request) -> Response:
        query = PresenceQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            rows = services.statuses(query.validated_data["members"])
        except (RedisError, OSError):
            raise PresenceUnavailable from None
        return Response(PresenceListSerializer({"members": [row.as_data() for row in rows]}).data)
