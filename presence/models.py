"""The Presence table: the admin's copy of the store, one row per member ever seen online."""

from django.conf import settings
from django.db import models


class Presence(models.Model):
    """A member's last known presence, copied from the store on each transition and on reconciliation.

    The store (Redis or memory) is the truth and decides every transition; this table only lets the admin list,
    filter and search members. Times are epoch seconds, exactly as the store and the events carry them, so a
    row can be compared with an event's `changed_at` to the last bit.
    """

    member = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="presence"
    )
    online = models.BooleanField(default=False)
    last_seen = models.FloatField(help_text="epoch seconds of the last heartbeat copied here")
    changed_at = models.FloatField(help_text="epoch seconds of the last online/offline transition")

    class Meta:
        verbose_name = "presence"
        verbose_name_plural = "presence"
        indexes = [models.Index(fields=["online", "-last_seen"], name="presence_online_seen")]

    def __str__(self) -> str:
        return f"{self.member_id} {'online' if self.online else 'offline'}"
