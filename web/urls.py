from django.urls import path

from web import api, views

app_name = "web"
urlpatterns = [
    path("", views.home, name="home"),
    path("videos/<slug:slug>/", views.watch, name="watch"),
    path("api/members", api.MembersView.as_view(), name="members"),
    path("favicon.ico", views.favicon, name="favicon"),
]
