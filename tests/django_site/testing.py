"""Set Django up in the test process itself on the test site (unit tests of the worker package).

:func:`setup` points the settings at the in-memory layer (unless the environment already
chose a layer) and a private state directory, then calls ``django.setup()``; it is
idempotent, so every unit-test module may call it. Worker *processes* get their settings
from :func:`tests.django_site.environment.site_environment` instead.
"""

from __future__ import annotations

import os
import tempfile

__all__ = ["INMEMORY_BACKEND", "setup"]

INMEMORY_BACKEND = "ipc_layer.inmemory.InMemoryChannelLayer"
_done = False


def setup() -> None:
    """Configure Django for the test site in this process (once)."""
    global _done
    if _done:
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.django_site.settings")
    os.environ.setdefault("IPC_TEST_LAYER_BACKEND", INMEMORY_BACKEND)
    os.environ.setdefault("IPC_TEST_PREFIX", f"unit{os.getpid()}")
    os.environ.setdefault("IPC_TEST_STATE_DIR", tempfile.mkdtemp(prefix="django_site-unit-"))
    import django

    django.setup()
    _done = True
