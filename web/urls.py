from django.urls import path

from web import views

app_name = "web"
urlpatterns = [
    path("", views.home, name="home"),
    path("videos/<slug:slug>/", views.watch, name="watch"),
    path("favicon.ico", views.favicon, name="favicon"),
]
