"""The app's config: its bindings connect to the model's signals once the app is loaded."""

from __future__ import annotations

from django.apps import AppConfig


class SocketsConfig(AppConfig):
    name = "tests.django_site.sockets"
    label = "sockets"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from . import bindings  # noqa: F401  (defining a Binding connects it)
