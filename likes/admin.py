"""Admin for live videos (with counts) and comment moderation; every change that viewers see goes through services."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from likes import services
from likes.models import Comment, LiveVideo, display_name


@admin.register(LiveVideo)
class LiveVideoAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "owner", "started_at", "ended_at", "like_count", "comments", "hidden_comments"]
    list_filter = ["status", "started_at"]
    search_fields = ["title", "slug", "description", "owner__username", "owner__first_name", "owner__last_name"]
    list_select_related = ["owner"]
    prepopulated_fields = {"slug": ["title"]}
    readonly_fields = ["like_count"]
    autocomplete_fields = ["owner"]
    date_hierarchy = "started_at"
    actions = ["end_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[LiveVideo]:
        # Both counts in the changelist's one query (no query per row).
        return (
            super()
            .get_queryset(request)
            .annotate(comment_total=Count("comments"), hidden_total=Count("comments", filter=Q(comments__hidden=True)))
        )

    @admin.display(description="comments", ordering="comment_total")
    def comments(self, video: LiveVideo) -> int:
        return video.comment_total  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="hidden", ordering="hidden_total")
    def hidden_comments(self, video: LiveVideo) -> int:
        return video.hidden_total  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.action(description="End the selected live videos now")
    def end_now(self, request: HttpRequest, queryset: QuerySet[LiveVideo]) -> None:
        ended = services.end_videos(queryset)
        self.message_user(request, f"{ended} video(s) ended.", messages.SUCCESS)


class HiddenFilter(admin.SimpleListFilter):
    title = "visibility"
    parameter_name = "visibility"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("visible", "Visible"), ("hidden", "Hidden")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Comment]) -> QuerySet[Comment]:
        if self.value() == "visible":
            return queryset.filter(hidden=False)
        if self.value() == "hidden":
            return queryset.filter(hidden=True)
        return queryset


@admin.register(Comment)
class CommentAdmin(admin.ModelAdmin):
    """Moderation: comments are read-only here; hiding, unhiding and deleting publish their events."""

    list_display = ["excerpt", "member_name", "video", "created", "hidden"]
    list_filter = [HiddenFilter, ("video", admin.RelatedOnlyFieldListFilter), "created"]
    search_fields = ["text", "member__username", "member__first_name", "member__last_name", "video__title"]
    list_select_related = ["member", "video"]
    date_hierarchy = "created"
    actions = ["hide", "unhide"]
    fields = ("video", "member", "text", "created", "hidden")
    readonly_fields = fields
    list_per_page = 100

    @admin.display(description="comment", ordering="text")
    def excerpt(self, comment: Comment) -> str:
        return str(comment)

    @admin.display(description="member", ordering="member__username")
    def member_name(self, comment: Comment) -> str:
        return display_name(comment.member)

    @admin.action(description="Hide the selected comments (they disappear from every page)")
    def hide(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        changed = services.set_comment_hidden(queryset, True)
        self.message_user(request, f"{changed} comment(s) hidden.", messages.SUCCESS)

    @admin.action(description="Unhide the selected comments")
    def unhide(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        changed = services.set_comment_hidden(queryset, False)
        self.message_user(request, f"{changed} comment(s) shown again.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Members post comments through the API, which checks and announces them.
        return False

    def delete_model(self, request: HttpRequest, obj: Comment) -> None:
        services.delete_comments([obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Comment]) -> None:
        services.delete_comments(queryset)
