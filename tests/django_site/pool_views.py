"""Views of the worker-pool process tests (tests/integration/worker/test_pool*.py), under ``/pool/``.

- ``pid/``: the pid of the worker that ran the view;
- ``slow/?s=S``: sleeps S seconds first (a request in flight while the test signals the pool);
- ``code/``: ``VALUE`` of the module named by ``IPC_TEST_POOL_MODULE`` (found on the
  ``PYTHONPATH`` the test sets), imported once per worker process: the test rewrites that
  file and checks which workers run the new code after a reload.
"""

from __future__ import annotations

import importlib
import os
import time

from django.http import HttpRequest, HttpResponse
from django.urls import path


def pid(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def slow(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("s", "1"))
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} in {os.getpid()}", content_type="text/plain")


def code(request: HttpRequest) -> HttpResponse:
    module = importlib.import_module(os.environ["IPC_TEST_POOL_MODULE"])
    return HttpResponse(f"{module.VALUE} {os.getpid()}", content_type="text/plain")


urlpatterns = [
    path("pid/", pid),
    path("slow/", slow),
    path("code/", code),
]
