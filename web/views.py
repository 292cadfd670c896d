"""The demo pages: the list of live videos and the watch page. Data arrives by API and stream."""

from django.contrib.auth import get_user_model
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.csrf import ensure_csrf_cookie

from likes.models import LiveVideo
from presence.services import may_read

MAX_PANEL_MEMBERS = 50


def home(request: HttpRequest) -> HttpResponse:
    videos = LiveVideo.objects.order_by("-status", "-started_at", "title")[:50]
    return render(request, "web/home.html", {"videos": videos})


@ensure_csrf_cookie
def watch(request: HttpRequest, slug: str) -> HttpResponse:
    video = get_object_or_404(LiveVideo, slug=slug)
    # The viewers/friends panel: the site's members (a demo has a handful). Presence is for signed-in members
    # unless the operator made it public (presence.services.may_read): anonymous visitors get no panel.
    panel = []
    show_presence = may_read(request.user.pk if request.user.is_authenticated else None, {})
    if show_presence:
        members = get_user_model().objects.filter(is_active=True, is_staff=False).order_by("username")
        panel = [
            {"id": member.pk, "name": member.get_full_name() or member.get_username()}
            for member in members[:MAX_PANEL_MEMBERS]
        ]
    return render(request, "web/watch.html", {"video": video, "panel": panel, "show_presence": show_presence})
