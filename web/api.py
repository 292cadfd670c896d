"""GET /api/members: members' display names, for the watch page's viewers panel (the census announces ids)."""

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from likes.models import display_name
from likes.serializers import ErrorSerializer
from presence.services import may_read

MAX_MEMBERS_PER_REQUEST = 100


class InvalidIds(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "invalid_ids"
    default_detail = "Give ids as comma-separated member ids, e.g. ?ids=1,2."


class TooManyIds(APIException):
    status_code = status.HTTP_400_BAD_REQUEST
    default_code = "too_many_ids"
    default_detail = f"Ask for at most {MAX_MEMBERS_PER_REQUEST} members at a time."


class NotAllowed(PermissionDenied):
    default_code = "not_allowed"
    default_detail = "Sign in to see who is watching."


class MemberNameSerializer(serializers.Serializer[dict[str, Any]]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class MemberNamesSerializer(serializers.Serializer[dict[str, Any]]):
    members = MemberNameSerializer(many=True)


def member_names(ids: list[int]) -> list[dict[str, Any]]:
    """Sync: `{"id", "name"}` of the active members among `ids`, in the order given (unknown ids left out)."""
    found = {member.pk: member for member in get_user_model().objects.filter(pk__in=ids, is_active=True)}
    return [{"id": pk, "name": display_name(found[pk])} for pk in ids if pk in found]


def parse_ids(raw: str) -> list[int]:
    """'3,1,3' -> [3, 1]; raises InvalidIds or TooManyIds."""
    parts = [part for part in raw.split(",") if part]
    if not parts or not all(part.isdigit() and len(part) <= 18 for part in parts):
        raise InvalidIds
    ids = list(dict.fromkeys(int(part) for part in parts))
    if len(ids) > MAX_MEMBERS_PER_REQUEST:
        raise TooManyIds
    return ids


class MembersView(APIView):
    # Who may see presence may see names (presence.services.may_read): signed-in members, or anyone with
    # PRESENCE PUBLIC. Checked in the view, since the rule is presence's setting, not a DRF permission.
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Members' display names",
        description=(
            "The names of the active members among `ids`, in the order asked, unknown ids left out: what the "
            "watch page shows for the member ids the census announces on `census.members.video.{id}.likes`. "
            "For signed-in members (anyone when presence is public)."
        ),
        parameters=[
            OpenApiParameter(
                "ids", str, OpenApiParameter.QUERY, required=True, description="comma-separated member ids, at most 100"
            )
        ],
        responses={
            200: MemberNamesSerializer,
            400: OpenApiResponse(ErrorSerializer, description="`invalid_ids` or `too_many_ids`"),
            403: OpenApiResponse(ErrorSerializer, description="`not_allowed`: sign in first"),
        },
        tags=["members"],
    )
    def get(self, request: Request) -> Response:
        if not may_read(request.user.pk if request.user.is_authenticated else None, {}):
            raise NotAllowed
        ids = parse_ids(request.query_params.get("ids", ""))
        return Response({"members": member_names(ids)})
