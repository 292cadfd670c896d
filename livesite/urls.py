from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from livesite import signin
from realtime import routing_view

urlpatterns = [
    # Rate-limited sign-in (livesite/signin.py), in front of the stock URLs of the same names.
    path("admin/login/", signin.admin_login, name="admin-login"),
    path("accounts/login/", signin.login, name="login"),
    path("admin/realtime/routing/", routing_view.routing, name="realtime-routing"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("likes.urls")),
    path("api/", include("presence.urls")),
    path("", include("messaging.urls")),  # /api/conversations... and the /messages/ page
    path("api/schema", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("web.urls")),
]

handler400 = "livesite.errors.bad_request"
handler404 = "livesite.errors.page_not_found"
handler500 = "livesite.errors.server_error"
