"""Routes: the library's stream view (the client picks channels with ?channel=), publish and stats."""

import django_eventstream
from django.urls import include, path

from peersite import views

urlpatterns = [
    path("events/", include(django_eventstream.urls)),
    path("publish", views.publish),
    path("stats", views.stats),
]
