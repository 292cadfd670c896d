from django.urls import path

from presence.api import PresenceView

app_name = "presence"
urlpatterns = [
    path("presence", PresenceView.as_view(), name="presence"),
]
