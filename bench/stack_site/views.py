"""The hello-world view: the same body as ``bench server``'s application."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from bench.server_apps import BODY


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(BODY, content_type="text/plain")
