"""Sign-in pages with a rate limit per client address: the site's and the admin's.

Thirty wrong passwords in a row all used to answer 200. A POST past REALTIME_RATE_LIMITS sign_in (10 a minute
per address by default, counted across workers) gets 429 with Retry-After and the form is not checked at all.
"""

import math
from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from realtime import limits


def _limited(request: HttpRequest) -> HttpResponse | None:
    if request.method != "POST":
        return None
    address = limits.client_address(request.META.get("REMOTE_ADDR"), request.META.get("HTTP_X_FORWARDED_FOR", ""))
    try:
        limits.hit("sign_in", f"address:{address}")
    except limits.Limited as exc:
        response = HttpResponse(
            f"Too many sign-in attempts from your address: try again in {math.ceil(exc.retry_after_secs)} s.",
            status=429,
            content_type="text/plain; charset=utf-8",
        )
        response["Retry-After"] = str(max(1, math.ceil(exc.retry_after_secs)))
        return response
    return None


class LoginView(auth_views.LoginView):
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return _limited(request) or super().post(request, *args, **kwargs)


def admin_login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    return _limited(request) or admin.site.login(request, extra_context)


login: Callable[..., HttpResponseBase] = LoginView.as_view()
