"""The /messages/ demo page: your conversations and one open conversation. Data arrives by API and stream."""

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from likes.models import display_name
from messaging import queries
from messaging.models import Participant

# Conversations the page lists and follows live: each is a topic of the page's one stream, which holds at
# most REALTIME_MAX_TOPICS_PER_CONNECTION (128); the open conversation adds two more and its participants'
# presence up to PANEL_MEMBERS.
LISTED_CONVERSATIONS = 60
PANEL_MEMBERS = 50


@login_required
@ensure_csrf_cookie
def inbox(request: HttpRequest, conversation_id: int | None = None) -> HttpResponse:
    member_id = request.user.pk
    if member_id is None:  # login_required let only members in
        raise Http404("sign in to see your conversations")
    rows = list(queries.memberships(member_id)[:LISTED_CONVERSATIONS])
    if conversation_id is None and rows:
        conversation_id = rows[0].conversation_id
    open_conversation = None
    people = []
    if conversation_id is not None:
        open_conversation = queries.conversation_of(member_id, conversation_id)
        if open_conversation is None:
            raise Http404("no conversation of yours has this id")
        participants = Participant.objects.filter(conversation=open_conversation).select_related("member")
        people = [
            {"id": p.member_id, "name": display_name(p.member), "me": p.member_id == member_id}
            for p in participants.order_by("joined", "id")[:PANEL_MEMBERS]
        ]
    summaries = queries.summaries(rows)
    listed = [
        {"id": row["id"], "name": conversation_name(row, member_id), "unread": row["unread"]} for row in summaries
    ]
    return render(
        request,
        "messaging/messages.html",
        {
            "conversations": listed,
            "open": open_conversation,
            "open_name": conversation_name(queries.summary(open_conversation, member_id), member_id)
            if open_conversation
            else "",
            "people": people,
            "me": {"id": member_id, "name": display_name(request.user)},
        },
    )


def conversation_name(summary: dict[str, Any], member_id: int) -> str:
    """What a list shows for a conversation: its title, else the other participants' names."""
    if summary["title"]:
        return str(summary["title"])
    names = [p["name"] for p in summary["participants"] if p["id"] != member_id]
    return ", ".join(names) or "(only you)"
