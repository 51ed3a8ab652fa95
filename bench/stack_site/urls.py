"""One route: ``/`` -> :func:`bench.stack_site.views.hello`."""

from __future__ import annotations

from django.urls import path

from bench.stack_site.views import hello

urlpatterns = [path("", hello)]
