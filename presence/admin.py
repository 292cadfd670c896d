"""Admin: who is online now, with last-seen times, read from the Presence table (a copy of the store)."""

import datetime as dt

from django.contrib import admin
from django.http import HttpRequest

from presence.models import Presence


def _when(epoch_secs: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_secs, tz=dt.UTC)


@admin.register(Presence)
class PresenceAdmin(admin.ModelAdmin):
    """Read-only: rows are written by presence.services only.

    The table is copied from the store on every transition and, once per RECONCILE_SECS, in full; so statuses are
    current to within a moment, and an online member's last-seen time to within RECONCILE_SECS.
    """

    list_display = ("member", "online", "last_seen_at", "changed")
    list_filter = ("online",)
    search_fields = ("member__username", "member__email")
    ordering = ("-online", "-last_seen")
    list_select_related = ("member",)
    readonly_fields = ("member", "online", "last_seen_at", "changed")
    fields = readonly_fields
    show_full_result_count = False

    @admin.display(description="last seen", ordering="last_seen")
    def last_seen_at(self, row: Presence) -> dt.datetime:
        return _when(row.last_seen)

    @admin.display(description="status since", ordering="changed_at")
    def changed(self, row: Presence) -> dt.datetime:
        return _when(row.changed_at)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Presence | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Presence | None = None) -> bool:
        return False
