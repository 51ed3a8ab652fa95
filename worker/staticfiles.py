"""Static files in development: ``runserver`` serves ``STATIC_URL`` from the workers when ``DEBUG`` is on.

Django's own ``runserver`` wraps its WSGI handler in ``StaticFilesHandler``; here the
requests arrive as ``http.request`` messages, so :func:`static_route` is a route, ahead of
the site's routing, to :class:`StaticFilesConsumer`: the default HTTP consumer whose
handler answers ``STATIC_URL`` paths with ``django.contrib.staticfiles.views.serve``
(the finders: every app's ``static/``, ``STATICFILES_DIRS``) and everything else as usual.
Never for production: like Django's, it is slow and only for ``DEBUG``.
"""

from __future__ import annotations

from typing import Any

from .http import ViewConsumer, WorkerHandler
from .routing import Route, route

__all__ = ["StaticFilesConsumer", "StaticFilesHandler", "static_route"]


class StaticFilesHandler(WorkerHandler):
    """The worker's request handler, plus ``STATIC_URL`` served from the staticfiles finders."""

    def get_response(self, request: Any) -> Any:
        from django.conf import settings
        from django.contrib.staticfiles.views import serve
        from django.http import Http404

        prefix = settings.STATIC_URL or "/static/"
        if not prefix.startswith("/"):
            prefix = "/" + prefix
        if request.path.startswith(prefix):
            try:
                return serve(request, request.path[len(prefix):], insecure=True)
            except Http404 as exc:
                from django.views import defaults

                return defaults.page_not_found(request, exc)
        return super().get_response(request)


class StaticFilesConsumer(ViewConsumer):
    """``ViewConsumer`` with :class:`StaticFilesHandler`."""

    handler_class = StaticFilesHandler


def static_route() -> Route:
    """The route of ``STATIC_URL`` requests to a :class:`StaticFilesConsumer`."""
    import re

    from django.conf import settings

    prefix = settings.STATIC_URL or "/static/"
    if not prefix.startswith("/"):
        prefix = "/" + prefix
    return route("http.request", StaticFilesConsumer(), path="^" + re.escape(prefix))
