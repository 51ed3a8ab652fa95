"""ASGI entry point (Daphne 4, uvicorn): Django's own ASGI handler, ``bench.stack_site.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.stack_site.settings")
application = get_asgi_application()
