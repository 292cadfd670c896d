"""No tables: only the `publish_event` permission, which needs a model to hang on."""

from django.db import models


class PublishGrant(models.Model):
    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("publish_event", "Can publish events through /api/publish")]

    def __str__(self) -> str:
        return "publish grant"
