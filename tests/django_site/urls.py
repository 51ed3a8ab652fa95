"""URLconf of the test site (other worker helpers append their own patterns here)."""

from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("meta/", views.meta, name="meta"),
    path("meta/<path:rest>", views.meta, name="meta_any"),
    path("form/", views.form, name="form"),
    path("json/", views.json_echo, name="json"),
    path("upload/", views.upload, name="upload"),
    path("body/", views.body, name="body"),
    path("slow/body/", views.body, name="slow_body"),  # routed to a ViewConsumer(body_timeout=2)
    path("stream/", views.stream, name="stream"),
    path("big/", views.big, name="big"),
    path("download/", views.download, name="download"),
    path("missing/", views.not_found, name="not_found"),
    path("error/", views.error, name="error"),
    path("go/", views.go, name="go"),
    path("set-cookie/", views.set_cookie, name="set_cookie"),
    path("cookies/", views.cookies, name="cookies"),
    path("session/", views.session, name="session"),
    path("signals/", views.signal_counts, name="signal_counts"),
    path("later/", views.later, name="later"),
    path("status/<int:code>/", views.status, name="status"),
    # the worker pool's process tests (pool)
    path("pool/", include("tests.django_site.pool_views")),
    # the consumer API's views (consumers)
    path("c/", include("tests.django_site.sockets.urls")),
]
