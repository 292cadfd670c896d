from django.urls import path

from realtime import views

app_name = "realtime"
urlpatterns = [
    path("subscriptions", views.subscriptions, name="subscriptions"),
    path("stats", views.stats, name="stats"),
    path("peer/events", views.peer_events, name="peer-events"),
]
