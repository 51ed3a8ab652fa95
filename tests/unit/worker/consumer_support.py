"""Django set up on the test site (in-memory layer) with its tables, for the consumer-API unit tests."""

from __future__ import annotations

from typing import Any

from tests.django_site import testing

_migrated = False


def setup() -> None:
    """Django on the test site, its database migrated once per test process."""
    global _migrated
    testing.setup()
    if not _migrated:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        _migrated = True


def make_user(username: str, password: str = "pw") -> Any:
    from django.contrib.auth.models import User

    User.objects.filter(username=username).delete()
    return User.objects.create_user(username=username, password=password)
