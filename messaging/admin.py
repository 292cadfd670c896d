"""Admin for conversations, participants and messages; every change members see goes through services."""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count, QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from likes.models import display_name
from messaging import services
from messaging.models import Conversation, Message, Participant


class ParticipantInline(admin.TabularInline):
    """Who is in it and how far each has read; added and removed on the Participants page (through services)."""

    model = Participant
    fields = ("member", "joined", "last_read_seq")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "kind", "participant_count", "last_seq", "updated", "created_by"]
    list_filter = ["kind", "updated"]
    search_fields = ["title", "participants__member__username"]
    list_select_related = ["created_by"]
    fields = ["kind", "title", "created_by", "created", "updated", "last_seq"]
    readonly_fields = ["kind", "created_by", "created", "updated", "last_seq"]
    inlines = [ParticipantInline]
    actions = ["delete_conversations"]
    date_hierarchy = "updated"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Conversation]:
        return super().get_queryset(request).annotate(participant_total=Count("participants", distinct=True))

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by delete_conversations, which revokes live topics
        return actions

    @admin.display(description="participants", ordering="participant_total")
    def participant_count(self, conversation: Conversation) -> int:
        return conversation.participant_total  # type: ignore[attr-defined]  # annotated by get_queryset

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Members start conversations through the API, which checks and announces them.
        return False

    @admin.action(description="Delete the selected conversations (participants lose them at once)")
    def delete_conversations(self, request: HttpRequest, queryset: QuerySet[Conversation]) -> None:
        try:
            deleted = services.delete_conversations(queryset)
        except services.AccessUnavailable as exc:
            self.message_user(request, f"Nothing deleted: {exc}. Retry shortly.", messages.ERROR)
            return
        self.message_user(request, f"{deleted} conversation(s) deleted.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Conversation) -> None:
        services.delete_conversations([obj])


class ParticipantAddForm(forms.ModelForm):
    """Who may join is the services' rule (groups only, up to MAX_PARTICIPANTS), checked before saving."""

    class Meta:
        model = Participant
        fields = ("conversation", "member")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        conversation = cleaned.get("conversation")
        if conversation is not None:
            try:
                services.check_can_join(conversation, 1)
            except services.InvalidConversation as exc:
                raise ValidationError(str(exc)) from None
        return cleaned


@admin.register(Participant)
class ParticipantAdmin(admin.ModelAdmin):
    """Add a member to a group, or remove one from any conversation: her open pages lose it within a second."""

    list_display = ["member_name", "conversation", "joined", "last_read_seq"]
    list_filter = [("conversation", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["member__username", "member__first_name", "conversation__title"]
    list_select_related = ["member", "conversation"]
    autocomplete_fields = ["member"]
    actions = ["remove"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ParticipantAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Participant | None = None) -> tuple[str, ...]:
        return ("conversation", "member") if obj is None else ("conversation", "member", "joined", "last_read_seq")

    def get_readonly_fields(self, request: HttpRequest, obj: Participant | None = None) -> tuple[str, ...]:
        return () if obj is None else ("conversation", "member", "joined", "last_read_seq")

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by remove, which revokes live topics
        return actions

    @admin.display(description="member", ordering="member__username")
    def member_name(self, participant: Participant) -> str:
        return display_name(participant.member)

    def save_model(self, request: HttpRequest, obj: Participant, form: ModelForm, change: bool) -> None:
        if change:
            return  # nothing is editable once added
        # ParticipantAddForm checked the rules; a race past them raises, and the admin shows the error.
        [added] = services.add_participants(obj.conversation, [obj.member])
        obj.pk = added.pk

    @admin.action(description="Remove the selected participants from their conversations")
    def remove(self, request: HttpRequest, queryset: QuerySet[Participant]) -> None:
        removed = 0
        try:
            for participant in queryset.select_related("conversation", "member"):
                removed += services.remove_participant(participant.conversation, participant.member)
        except services.AccessUnavailable as exc:
            self.message_user(request, f"{removed} removed, then stopped: {exc}. Retry shortly.", messages.ERROR)
            return
        self.message_user(request, f"{removed} participant(s) removed.", messages.SUCCESS)

    def delete_model(self, request: HttpRequest, obj: Participant) -> None:
        services.remove_participant(obj.conversation, obj.member)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    """Moderation: messages are read-only here; deleting one empties it and removes it from every open page."""

    list_display = ["excerpt", "author_name", "conversation", "seq", "created", "edited", "deleted"]
    list_filter = [("conversation", admin.RelatedOnlyFieldListFilter), "created"]
    search_fields = ["text", "author__username", "author__first_name", "conversation__title"]
    list_select_related = ["author", "conversation"]
    date_hierarchy = "created"
    actions = ["moderate"]
    fields = ("conversation", "seq", "author", "text", "created", "edited", "deleted", "deleted_by_moderator")
    readonly_fields = fields
    list_per_page = 100

    @admin.display(description="message", ordering="text")
    def excerpt(self, message: Message) -> str:
        return str(message)

    @admin.display(description="author", ordering="author__username")
    def author_name(self, message: Message) -> str:
        return display_name(message.author) if message.author else "(gone)"

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced by moderate, which announces each deletion
        return actions

    @admin.action(description="Delete the selected messages for everyone (they disappear from every page)")
    def moderate(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        deleted = services.moderate_messages(queryset)
        self.message_user(request, f"{deleted} message(s) deleted.", messages.SUCCESS)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def delete_model(self, request: HttpRequest, obj: Message) -> None:
        services.moderate_messages([obj])
