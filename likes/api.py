"""REST API for live videos, likes and comments: validate with a serializer, call one service."""

from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, status
from rest_framework.exceptions import APIException, NotAuthenticated, NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import IsAuthenticated, IsAuthenticatedOrReadOnly
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from likes import queries, services
from likes.models import LiveVideo
from likes.serializers import (
    CommentInputSerializer,
    CommentSerializer,
    ErrorSerializer,
    LikeResultSerializer,
    VideoQuerySerializer,
    VideoSerializer,
)
from likes.viewers import viewer_counts
from livesite.errors import body_of, check_rate


class VideoNotFound(NotFound):
    default_code = "video_not_found"
    default_detail = "no video has this id: GET /api/videos lists them"


COMMENT_TOO_LARGE = "the request body is too large: a comment is at most 1,000 characters"


class VideoEnded(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "video_ended"
    default_detail = "this video has ended: it takes no more likes or comments"


class NewestFirst(CursorPagination):
    """Cursor pages, newest first; a forged cursor is a 404, never a 500."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        try:
            return super().paginate_queryset(queryset, request, view)
        except (NotFound, DjangoValidationError, ValueError, TypeError, OverflowError):
            # DRF checks a cursor's encoding, not its position value, which reaches the filter as given.
            raise NotFound(self.invalid_cursor_message, code="invalid_cursor") from None


class CommentPages(NewestFirst):
    ordering = ("-created", "-id")


class VideoPages(NewestFirst):
    ordering = ("-started_at", "-id")


VIDEO_ID = OpenApiParameter("video_id", OpenApiTypes.INT, OpenApiParameter.PATH, description="the video's id")
ERRORS = {
    404: OpenApiResponse(ErrorSerializer, description="no such video ('video_not_found'), or a bad cursor"),
}
WRITE_ERRORS = {
    **ERRORS,
    403: OpenApiResponse(ErrorSerializer, description="not signed in ('not_authenticated'), or a failed CSRF check"),
    409: OpenApiResponse(ErrorSerializer, description="the video has ended ('video_ended')"),
    429: OpenApiResponse(ErrorSerializer, description="too many in a short time ('rate_limited', Retry-After)"),
}


def get_video(raw_id: str, queryset: Any = None) -> LiveVideo:
    video = queries.find_video(raw_id, queryset)
    if video is None:
        raise VideoNotFound(f"no video has id {raw_id[:30]!r}: GET /api/videos lists them")
    return video


class VideoListView(generics.ListAPIView):
    serializer_class = VideoSerializer
    pagination_class = VideoPages

    def get_queryset(self) -> Any:
        query = VideoQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        videos = queries.videos_with_counts()
        if "status" in query.validated_data:
            videos = videos.filter(status=query.validated_data["status"])
        return videos

    @extend_schema(
        summary="List videos, newest first",
        parameters=[VideoQuerySerializer],
        responses={
            200: VideoSerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="an unknown status ('invalid', see 'errors')"),
        },
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.get_queryset()) or []
        context = {**self.get_serializer_context(), "viewer_counts": viewer_counts([video.pk for video in page])}
        return self.get_paginated_response(VideoSerializer(page, many=True, context=context).data)


class VideoDetailView(APIView):
    @extend_schema(
        summary="One video with its counts", parameters=[VIDEO_ID], responses={200: VideoSerializer, **ERRORS}
    )
    def get(self, request: Request, video_id: str) -> Response:
        video = get_video(video_id, queries.videos_with_counts())
        context = {"request": request, "viewer_counts": viewer_counts([video.pk])}
        return Response(VideoSerializer(video, context=context).data)


# The like endpoint's OpenAPI description, and its answer to requests that reach Django. Under ASGI the path is
# served by likes.endpoints.like, routed before Django (no request thread, likes written in async batches); this
# view answers only what Django's own handlers bring (its test client, an entry point that does not route by path
# first), with the same statuses and codes. A comment, not a docstring: drf-spectacular would publish a docstring.
class LikeView(APIView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        summary="Like a live video (any number of times)",
        parameters=[VIDEO_ID],
        request=None,
        responses={201: LikeResultSerializer, **WRITE_ERRORS},
        examples=[OpenApiExample("liked", value={"count": 42}, response_only=True, status_codes=["201"])],
    )
    def post(self, request: Request, video_id: str) -> Response:
        video = get_video(video_id)
        member = member_of(request)
        check_rate("like", f"member:{member.pk}")  # hearts, not a flood: REALTIME_RATE_LIMITS like
        try:
            count = services.like_video(video, member)
        except services.VideoNotLive:
            raise VideoEnded from None
        except services.NoSuchVideo:
            raise VideoNotFound from None  # deleted since get_video read it
        return Response(LikeResultSerializer({"count": count}).data, status=status.HTTP_201_CREATED)


class CommentsView(generics.ListCreateAPIView):
    serializer_class = CommentSerializer
    pagination_class = CommentPages
    permission_classes = [IsAuthenticatedOrReadOnly]

    def get_queryset(self) -> Any:
        video = get_video(self.kwargs["video_id"])
        return queries.comments_of(video, include_hidden=self.request.user.is_staff)

    @extend_schema(
        summary="A video's comments, newest first (hidden ones only for staff)",
        parameters=[VIDEO_ID],
        responses={200: CommentSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Comment on a live video",
        parameters=[VIDEO_ID],
        request=CommentInputSerializer,
        responses={
            201: CommentSerializer,
            400: OpenApiResponse(ErrorSerializer, description="empty or too long text ('invalid', see 'errors')"),
            413: OpenApiResponse(ErrorSerializer, description="a body past the server's upload limit ('too_large')"),
            **WRITE_ERRORS,
        },
    )
    def post(self, request: Request, video_id: str) -> Response:
        video = get_video(video_id)
        member = member_of(request)
        check_rate("comment", f"member:{member.pk}")
        data = CommentInputSerializer(data=body_of(request, COMMENT_TOO_LARGE))
        data.is_valid(raise_exception=True)
        try:
            comment = services.post_comment(video, member, data.validated_data["text"])
        except services.VideoNotLive:
            raise VideoEnded from None
        except services.InvalidComment as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        return Response(CommentSerializer(comment).data, status=status.HTTP_201_CREATED)


def member_of(request: Request) -> User:
    """The signed-in member of a request the view's permission already required to be authenticated."""
    if not isinstance(request.user, User):
        raise NotAuthenticated
    return request.user
