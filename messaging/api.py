"""REST API for conversations, their participants, messages, typing and read marks: validate with a serializer,
call one service.

A conversation the caller does not take part in answers 404, exactly as one that does not exist: the API
never tells a member which conversations exist.
"""

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from redis.exceptions import RedisError
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, PermissionDenied, ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param
from rest_framework.views import APIView

from likes.api import NewestFirst, member_of
from likes.serializers import ErrorSerializer
from livesite.errors import body_of
from messaging import conf, queries, services
from messaging.models import Conversation, Message
from messaging.ratelimits import check_rate
from messaging.serializers import (
    ConversationInputSerializer,
    ConversationPageSerializer,
    ConversationSerializer,
    MessageInputSerializer,
    MessagePageSerializer,
    MessageSerializer,
    MessagesQuerySerializer,
    ParticipantInputSerializer,
    ReadInputSerializer,
    ReadResultSerializer,
    TypingInputSerializer,
    TypingResultSerializer,
    message_data,
)


class ConversationNotFound(NotFound):
    default_code = "conversation_not_found"
    default_detail = "you take part in no conversation with this id: GET /api/conversations lists yours"


class MessageNotFound(NotFound):
    default_code = "message_not_found"
    default_detail = "this conversation has no message with this id"


class NotAuthor(PermissionDenied):
    default_code = "not_author"
    default_detail = "only a message's author may edit or delete it"


class MessageDeleted(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "message_deleted"
    default_detail = "this message was deleted: it cannot be edited"


class TypingUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "typing_unavailable"
    default_detail = "the typing store (Redis) is unreachable; retry shortly"


class ParticipantNotFound(NotFound):
    default_code = "participant_not_found"
    default_detail = "this member takes no part in this conversation"


class NotConversationAdmin(PermissionDenied):
    default_code = "not_conversation_admin"
    default_detail = "only the conversation's creator (or staff) may add or remove participants; you may leave it"


class DirectConversation(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "direct_conversation"
    default_detail = "a one-to-one conversation keeps its two members: start a group instead"


class ConversationFull(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conversation_full"
    default_detail = "this group has as many participants as MESSAGING_MAX_PARTICIPANTS allows"


class AccessUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "access_unavailable"
    default_detail = "the workers could not be told of the removal (Redis unreachable); nothing changed, retry shortly"


MESSAGE_TOO_LARGE = "the request body is too large: a message is at most 4,000 characters"

CONVERSATION_ID = OpenApiParameter(
    "conversation_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the conversation's id"
)
MEMBER_ID = OpenApiParameter(
    "member_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the participant's member id"
)
MESSAGE_ID = OpenApiParameter("message_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the message's id")
NOT_SIGNED_IN = OpenApiResponse(
    ErrorSerializer, description="not signed in ('not_authenticated'), or a failed CSRF check"
)
NOT_YOURS = OpenApiResponse(
    ErrorSerializer, description="no conversation of yours has this id ('conversation_not_found')"
)
ERRORS = {403: NOT_SIGNED_IN, 404: NOT_YOURS}
TOO_FAST = OpenApiResponse(
    ErrorSerializer, description="faster than MESSAGING_RATE_LIMITS allows ('rate_limited', Retry-After)"
)
INVALID = OpenApiResponse(ErrorSerializer, description="a bad body ('invalid', see 'errors')")
TOO_LARGE = OpenApiResponse(ErrorSerializer, description="a body past the server's upload limit ('too_large')")


def conversation_for(request: Request, raw_id: str) -> Conversation:
    conversation = queries.conversation_of(member_of(request).pk, raw_id)
    if conversation is None:
        raise ConversationNotFound(
            f"you take part in no conversation with id {raw_id[:30]!r}: GET /api/conversations lists yours"
        )
    return conversation


def message_for(conversation: Conversation, raw_id: str) -> Message:
    message = queries.message_in(conversation, raw_id)
    if message is None:
        raise MessageNotFound(f"conversation {conversation.pk} has no message with id {raw_id[:30]!r}")
    return message


class ConversationPages(NewestFirst):
    """Most recent activity first; a forged cursor is a 404."""

    ordering = ("-updated", "-conversation_id")


class ConversationsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="conversations_list",
        summary="Your conversations, most recent first, with unread counts",
        parameters=[
            OpenApiParameter("cursor", OpenApiTypes.STR, description="from `next` or `previous`"),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="at most 100 (default 50)"),
        ],
        responses={
            200: ConversationPageSerializer,
            403: NOT_SIGNED_IN,
            404: OpenApiResponse(ErrorSerializer, description="a bad cursor"),
        },
    )
    def get(self, request: Request) -> Response:
        paginator = ConversationPages()
        rows = paginator.paginate_queryset(queries.memberships(member_of(request).pk), request, view=self) or []
        data = ConversationSerializer(queries.summaries(rows), many=True).data
        return Response({"next": paginator.get_next_link(), "previous": paginator.get_previous_link(), "results": data})

    @extend_schema(
        summary="Start a conversation (one other member and no title: your one-to-one conversation with her)",
        request=ConversationInputSerializer,
        responses={
            200: OpenApiResponse(ConversationSerializer, description="your existing one-to-one conversation"),
            201: ConversationSerializer,
            400: OpenApiResponse(
                ErrorSerializer, description="unknown members, nobody but you, or more than 100 ('invalid')"
            ),
            403: NOT_SIGNED_IN,
            413: TOO_LARGE,
            429: TOO_FAST,
        },
    )
    def post(self, request: Request) -> Response:
        member = member_of(request)
        check_rate("conversation", member.pk)
        data = ConversationInputSerializer(data=body_of(request))
        data.is_valid(raise_exception=True)
        try:
            conversation, created = services.create_conversation(
                member, data.validated_data["participants"], data.validated_data.get("title", "")
            )
        except services.InvalidConversation as exc:
            raise ValidationError({"participants": [str(exc)]}) from None
        body = ConversationSerializer(queries.summary(conversation, member.pk)).data
        return Response(body, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class ConversationDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="One of your conversations, with its participants and their read marks",
        parameters=[CONVERSATION_ID],
        responses={200: ConversationSerializer, **ERRORS},
    )
    def get(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        return Response(ConversationSerializer(queries.summary(conversation, member_of(request).pk)).data)


class MessagesView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="A conversation's messages, oldest first: the newest page, or the one before/after a seq",
        parameters=[CONVERSATION_ID, MessagesQuerySerializer],
        responses={200: MessagePageSerializer, 400: INVALID, **ERRORS},
    )
    def get(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        query = MessagesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        page, older, newer = queries.messages_page(
            conversation,
            before=query.validated_data.get("before"),
            after=query.validated_data.get("after"),
            limit=limit,
        )
        url = remove_query_param(remove_query_param(request.build_absolute_uri(), "before"), "after")
        return Response(
            {
                "older": replace_query_param(url, "before", page[0].seq) if older and page else None,
                "newer": replace_query_param(url, "after", page[-1].seq) if newer and page else None,
                "results": [message_data(message) for message in page],
            }
        )

    @extend_schema(
        summary="Send a message",
        parameters=[CONVERSATION_ID],
        request=MessageInputSerializer,
        responses={201: MessageSerializer, 400: INVALID, 413: TOO_LARGE, 429: TOO_FAST, **ERRORS},
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        member = member_of(request)
        check_rate("message", member.pk)
        data = MessageInputSerializer(data=body_of(request, MESSAGE_TOO_LARGE))
        data.is_valid(raise_exception=True)
        try:
            message = services.send_message(conversation, member, data.validated_data["text"])
        except services.InvalidMessage as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        except services.NotParticipant:
            raise ConversationNotFound from None  # removed a moment ago
        return Response(message_data(message), status=status.HTTP_201_CREATED)


class MessageDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Edit your message",
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=MessageInputSerializer,
        responses={
            200: MessageSerializer,
            400: INVALID,
            403: OpenApiResponse(ErrorSerializer, description="not signed in, or not your message ('not_author')"),
            404: OpenApiResponse(ErrorSerializer, description="no such conversation of yours, or message in it"),
            409: OpenApiResponse(ErrorSerializer, description="the message was deleted ('message_deleted')"),
            413: TOO_LARGE,
            429: TOO_FAST,
        },
    )
    def patch(self, request: Request, conversation_id: str, message_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        message = message_for(conversation, message_id)
        member = member_of(request)
        check_rate("message", member.pk)
        data = MessageInputSerializer(data=body_of(request, MESSAGE_TOO_LARGE))
        data.is_valid(raise_exception=True)
        try:
            message = services.edit_message(message, member, data.validated_data["text"])
        except services.InvalidMessage as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        except services.NotAuthor:
            raise NotAuthor from None
        except services.MessageDeleted:
            raise MessageDeleted from None
        return Response(message_data(message))

    @extend_schema(
        summary="Delete your message (it stays as a tombstone without text; deleting it again changes nothing)",
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=None,
        responses={
            204: OpenApiResponse(description="deleted"),
            403: OpenApiResponse(ErrorSerializer, description="not signed in, or not your message ('not_author')"),
            404: OpenApiResponse(ErrorSerializer, description="no such conversation of yours, or message in it"),
        },
    )
    def delete(self, request: Request, conversation_id: str, message_id: str) -> Response:
        message = message_for(conversation_for(request, conversation_id), message_id)
        try:
            services.delete_message(message, member_of(request))
        except services.NotAuthor:
            raise NotAuthor from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class TypingView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Say you are typing (refresh it while you type) or that you stopped",
        parameters=[CONVERSATION_ID],
        request=TypingInputSerializer,
        responses={
            200: TypingResultSerializer,
            400: INVALID,
            429: TOO_FAST,
            503: OpenApiResponse(ErrorSerializer, description="the typing store is unreachable ('typing_unavailable')"),
            **ERRORS,
        },
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        member = member_of(request)
        check_rate("typing", member.pk)
        data = TypingInputSerializer(data=body_of(request))
        data.is_valid(raise_exception=True)
        typing = data.validated_data["typing"]
        try:
            started = services.set_typing(conversation, member, typing)
        except (RedisError, OSError):
            raise TypingUnavailable from None
        result = {
            "typing": typing,
            "announced": started.announced,
            "shown": started.shown,
            "retry_in": round(max(0.0, started.retry_in_secs), 3),
            "expires_in": float(conf.get("TYPING_TIMEOUT_SECS")) if typing else 0.0,
        }
        return Response(TypingResultSerializer(result).data)


class ReadView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Mark the conversation read up to a message (a mark never goes backwards)",
        parameters=[CONVERSATION_ID],
        request=ReadInputSerializer,
        responses={
            200: ReadResultSerializer,
            400: OpenApiResponse(ErrorSerializer, description="a bad body, or no such message here ('invalid')"),
            **ERRORS,
        },
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        data = ReadInputSerializer(data=body_of(request))
        data.is_valid(raise_exception=True)
        try:
            state = services.mark_read(conversation, member_of(request), data.validated_data["message"])
        except services.MessageNotFound as exc:
            raise ValidationError({"message": [str(exc)]}) from None
        except services.NotParticipant:
            raise ConversationNotFound from None
        return Response(ReadResultSerializer({"last_read_seq": state.last_read_seq, "unread": state.unread}).data)


def _participant_errors(call: Any) -> Any:
    """Run a participants service call, turning its refusals into the API's errors."""
    try:
        return call()
    except services.DirectConversation as exc:
        raise DirectConversation(str(exc)) from None
    except services.ConversationFull as exc:
        raise ConversationFull(str(exc)) from None
    except services.NotAllowed as exc:
        raise NotConversationAdmin(str(exc)) from None
    except services.AccessUnavailable:
        raise AccessUnavailable from None


MANAGE_ERRORS = {
    403: OpenApiResponse(
        ErrorSerializer,
        description="not signed in, or neither the creator nor staff ('not_conversation_admin'; anyone may leave)",
    ),
    409: OpenApiResponse(
        ErrorSerializer,
        description="a one-to-one conversation ('direct_conversation'), or a full group ('conversation_full')",
    ),
}


class ParticipantsView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Add a member to a group you created (or as staff): she may subscribe to it at once",
        parameters=[CONVERSATION_ID],
        request=ParticipantInputSerializer,
        responses={
            200: OpenApiResponse(ConversationSerializer, description="she takes part in it already: nothing changed"),
            201: OpenApiResponse(ConversationSerializer, description="added; `participant.added` announced"),
            400: OpenApiResponse(ErrorSerializer, description="a bad body, or no active member has this id"),
            404: NOT_YOURS,
            413: TOO_LARGE,
            **MANAGE_ERRORS,
        },
    )
    def post(self, request: Request, conversation_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        actor = member_of(request)
        data = ParticipantInputSerializer(data=body_of(request))
        data.is_valid(raise_exception=True)
        member_id = data.validated_data["member"]
        member = get_user_model().objects.filter(pk=member_id, is_active=True).first()
        if member is None:
            raise ValidationError({"member": [f"no member has id {member_id}"]})
        added = _participant_errors(lambda: services.add_participants(conversation, [member], by=actor))
        body = ConversationSerializer(queries.summary(conversation, actor.pk)).data
        return Response(body, status=status.HTTP_201_CREATED if added else status.HTTP_200_OK)


class ParticipantDetailView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Remove a member from a group you created (or as staff), or leave one (your own id)",
        description="Her live streams lose the conversation's topics on every worker within a second (`event: "
        "unsubscribed`), and no worker lets her subscribe to them again.",
        parameters=[CONVERSATION_ID, MEMBER_ID],
        request=None,
        responses={
            204: OpenApiResponse(description="removed; `participant.removed` announced"),
            404: OpenApiResponse(
                ErrorSerializer,
                description="no conversation of yours has this id ('conversation_not_found'), or the member takes "
                "no part in it ('participant_not_found')",
            ),
            503: OpenApiResponse(
                ErrorSerializer, description="Redis unreachable: nothing changed ('access_unavailable')"
            ),
            **MANAGE_ERRORS,
        },
    )
    def delete(self, request: Request, conversation_id: str, member_id: str) -> Response:
        conversation = conversation_for(request, conversation_id)
        actor = member_of(request)
        member_pk = queries.parse_id(member_id)
        member = None if member_pk is None else get_user_model().objects.filter(pk=member_pk).first()
        if member is None:
            raise ParticipantNotFound(f"conversation {conversation.pk} has no participant with id {member_id[:30]!r}")
        if not _participant_errors(lambda: services.remove_participant(conversation, member, by=actor)):
            raise ParticipantNotFound(f"member {member.pk} takes no part in conversation {conversation.pk}")
        return Response(status=status.HTTP_204_NO_CONTENT)
