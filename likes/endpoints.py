"""POST /api/videos/{id}/likes as a bare ASGI app: async from the socket to the batch that stores the like.

A like is the hottest write of the site (a live video draws them in bursts of thousands per second). Through
Django and DRF each one cost a request thread and about 4 ms of worker CPU (docs/benchmarks.md); here it costs
a cached token lookup, one Redis round trip for the rate limit, and a share of one batch (likes.services:
`alike_video`, the async path's one database boundary). Same contract as the DRF view it replaces
(likes.api.LikeView, which still describes it in the OpenAPI schema): 201 {"count"}; 403 `not_authenticated`,
`authentication_failed` (a bad token) or `permission_denied` (a session without its CSRF token); 404
`video_not_found`; 409 `video_ended`; 429 `rate_limited` with Retry-After (REALTIME_RATE_LIMITS `like`, per
member, counted in Redis across workers); 503 `database_unavailable` with Retry-After. A body is accepted and
ignored, as before (read, so that the CSRF check sees a form's token).

Routed by path before Django (`route()`, called from the ASGI entry point): see the module's callers.
"""

import re

from django.conf import settings

from likes import services
from likes.queries import parse_video_id
from realtime import auth, limits
from realtime.http import ASGIApp, HttpError, Receive, Request, Send, aread_body, asend_json, check_method, endpoint

# What Django's <str:video_id> matched: any one non-empty segment. An id that names no video is a JSON 404.
LIKES_PATH = re.compile(r"/api/videos/(?P<video_id>[^/]+)/likes")

NOT_AUTHENTICATED = HttpError(403, "not_authenticated", "Authentication credentials were not provided.")


def _video_not_found(raw_id: str) -> HttpError:
    return HttpError(404, "video_not_found", f"no video has id {raw_id[:30]!r}: GET /api/videos lists them")


VIDEO_ENDED = HttpError(409, "video_ended", "this video has ended: it takes no more likes or comments")


async def _amember(request: Request) -> int:
    """Async: the signed-in member's id; refusals in the words and statuses the DRF view answered with."""
    try:
        caller = await auth.aauthenticate(request)
    except HttpError as exc:
        if exc.status == 401:
            # DRF answered a bad token 403 (its session authentication, tried first, has no challenge to send).
            raise HttpError(403, "authentication_failed", "Invalid token.") from None
        if exc.code == "csrf_failed":
            raise HttpError(403, "permission_denied", exc.detail) from None
        raise
    if caller.member_id is None:
        raise NOT_AUTHENTICATED
    return caller.member_id


@endpoint
async def like(request: Request, receive: Receive, send: Send) -> None:
    """POST one like of the video in the path by the signed-in member; 201 {"count": exact total with it}."""
    check_method(request, ("POST",))
    await aread_body(request, receive, int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 2_621_440))
    member_id = await _amember(request)
    match = LIKES_PATH.fullmatch(request.path)
    raw_id = match["video_id"] if match else ""
    video_id = parse_video_id(raw_id)
    if video_id is None:
        raise _video_not_found(raw_id)
    # Hearts, not a flood: one member's likes per second, counted across workers.
    await limits.ahit("like", f"member:{member_id}")
    try:
        count = await services.alike_video(video_id, member_id)
    except services.NoSuchVideo:
        raise _video_not_found(raw_id) from None
    except services.VideoNotLive:
        raise VIDEO_ENDED from None
    await asend_json(send, 201, {"count": count})


def route(path: str) -> ASGIApp | None:
    """The ASGI app serving `path` if it is the likes endpoint's, else None (the ASGI entry point asks)."""
    return like if LIKES_PATH.fullmatch(path) else None
