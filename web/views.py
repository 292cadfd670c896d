"""The demo pages: the home page's video cards and the watch page. Live data arrives by API and stream."""

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static
from django.views.decorators.csrf import ensure_csrf_cookie

from likes.models import LiveVideo
from likes.queries import videos_with_counts
from likes.viewers import viewer_counts, viewer_tally
from presence.services import may_read
from realtime import conf as realtime_conf
from web.api import member_names

# The census lists at most realtime.census.MAX_LISTED_MEMBERS (100) watchers of a video; the page shows them all.
MAX_PANEL_MEMBERS = 100
MAX_LIVE_CARDS = 48
MAX_ENDED_CARDS = 12
# How often the home page rereads its cards (GET /api/videos): a safety net and the way it learns of videos that
# started since it loaded; like totals and ends arrive on the stream (videos.likes).
HOME_REFRESH_SECS = 60


def _hue(video: LiveVideo) -> int:
    """A colour of its own for each video's stand-in thumbnail."""
    return (video.pk * 47) % 360


def _census_secs() -> float:
    return float(realtime_conf.get("CENSUS_SECS"))


@ensure_csrf_cookie  # a signed-in visitor's subscription requests carry the CSRF token from the cookie
def home(request: HttpRequest) -> HttpResponse:
    """Live videos as cards with live viewer and like counts; ended videos apart, below."""
    live = list(
        videos_with_counts().filter(status=LiveVideo.Status.LIVE).order_by("-started_at", "-id")[:MAX_LIVE_CARDS]
    )
    ended = list(
        videos_with_counts().filter(status=LiveVideo.Status.ENDED).order_by("-ended_at", "-id")[:MAX_ENDED_CARDS]
    )
    viewers = viewer_counts([video.pk for video in live])
    context: dict[str, Any] = {
        "live": [{"video": video, "viewers": viewers.get(video.pk), "hue": _hue(video)} for video in live],
        "ended": [{"video": video, "hue": _hue(video)} for video in ended],
        "refresh_secs": HOME_REFRESH_SECS,
    }
    return render(request, "web/home.html", context)


@ensure_csrf_cookie
def watch(request: HttpRequest, slug: str) -> HttpResponse:
    video = get_object_or_404(LiveVideo, slug=slug)
    me = request.user.pk if request.user.is_authenticated else None
    # The viewers panel: the signed-in members watching THIS video now (the census lists them across all
    # workers; anonymous viewers are counted, not listed), each with their presence dot. Presence is for
    # signed-in members unless the operator made it public (presence.services.may_read): anonymous visitors get
    # no panel. The page keeps the list current from `census.changed` and GET /api/members for new names.
    show_presence = may_read(me, {})
    tally = viewer_tally(video.pk) if video.is_live else None
    panel: list[dict[str, Any]] = []
    if show_presence and video.is_live:
        # This viewer is watching even before the census counts their stream (it is not open yet).
        watching = ([me] if me is not None else []) + [m for m in (tally.members if tally else ()) if m != me]
        panel = member_names(watching[:MAX_PANEL_MEMBERS])
        for member in panel:
            member["me"] = member["id"] == me
    # The viewer count as this request found it: it cannot count this viewer, whose stream is not open yet.
    context = {
        "video": video,
        "panel": panel,
        "show_presence": show_presence,
        "viewers": tally.count if tally else None,
        "census_secs": _census_secs(),
        "max_panel_members": MAX_PANEL_MEMBERS,
    }
    return render(request, "web/watch.html", context)


def favicon(request: HttpRequest) -> HttpResponse:
    """/favicon.ico, which browsers ask for on pages without a <link rel=icon> (the admin, the API's JSON)."""
    return HttpResponseRedirect(static("web/favicon.svg"))
