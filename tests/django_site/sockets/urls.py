"""URLs of the consumer-side views (included under ``/c/`` by the site's URLconf)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.login),
    path("task/", views.task),
    path("delay/", views.delay),
    path("poll/", views.poll),
    path("notify/", views.notify),
    path("pollers/", views.pollers),
    path("note/", views.note),
]
