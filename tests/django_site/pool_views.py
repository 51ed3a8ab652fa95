"""Views of the worker-pool process tests (tests/integration/worker/test_pool*.py), under ``/pool/``.

- ``pid/``: the pid of the worker that ran the view;
- ``slow/?s=S&mark=FILE``: creates FILE (the test knows the view has started), then sleeps
  S seconds (a request in flight while the test signals the pool);
- ``code/``: ``VALUE`` of the module named by ``IPC_TEST_POOL_MODULE`` (found on the
  ``PYTHONPATH`` the test sets), imported once per process, when this URLconf is: the test
  rewrites that file and checks which workers run the new code after a reload (and the
  ``--reload`` master, which imports the URLconf, watches that file).
"""

from __future__ import annotations

import importlib
import os
import time

from django.http import HttpRequest, HttpResponse
from django.urls import path

#: The reloadable module (None when the test did not name one).
_code = importlib.import_module(os.environ["IPC_TEST_POOL_MODULE"]) if os.environ.get("IPC_TEST_POOL_MODULE") else None


def pid(request: HttpRequest) -> HttpResponse:
    return HttpResponse(str(os.getpid()), content_type="text/plain")


def slow(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("s", "1"))
    mark = request.GET.get("mark")
    if mark:
        with open(mark, "x"):
            pass
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g} in {os.getpid()}", content_type="text/plain")


def code(request: HttpRequest) -> HttpResponse:
    if _code is None:
        return HttpResponse("IPC_TEST_POOL_MODULE is not set", status=500, content_type="text/plain")
    return HttpResponse(f"{_code.VALUE} {os.getpid()}", content_type="text/plain")


urlpatterns = [
    path("pid/", pid),
    path("slow/", slow),
    path("code/", code),
]
