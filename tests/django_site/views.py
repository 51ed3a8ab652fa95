"""Views for each HTTP case the worker tests cover; each answers with what the test checks.

JSON answers describe the request as the view saw it (``META``, ``GET``/``POST``, files,
session, cookies), so a test asserts on Django's view of the request, not on ours.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

from django.core import signals
from django.http import (
    FileResponse,
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

#: META keys the ``meta`` view reports (besides every HTTP_* header).
META_KEYS = (
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_PORT", "CONTENT_TYPE", "CONTENT_LENGTH",
    "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.version",
)


def _int(request: HttpRequest, name: str, default: int, maximum: int) -> int:
    try:
        value = int(request.GET.get(name, default))
    except ValueError:
        return default
    return max(0, min(value, maximum))


#: How often this process saw Django's request signals (the ``signal_counts`` view reports them).
SIGNAL_COUNTS = {"started": 0, "finished": 0}


def _count_started(**kwargs: Any) -> None:
    SIGNAL_COUNTS["started"] += 1


def _count_finished(**kwargs: Any) -> None:
    SIGNAL_COUNTS["finished"] += 1


signals.request_started.connect(_count_started, dispatch_uid="django_site.count_started")
signals.request_finished.connect(_count_finished, dispatch_uid="django_site.count_finished")


def signal_counts(request: HttpRequest) -> JsonResponse:
    """This process's pid and request-signal counts (the current request's finish not yet counted)."""
    return JsonResponse({"pid": os.getpid(), **SIGNAL_COUNTS})


def index(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"hello from {request.method} {request.path}\n", content_type="text/plain")


def meta(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Everything a test checks about how the request reached Django (``meta/<anything>`` too)."""
    metadata: dict[str, Any] = {}
    for key in META_KEYS:
        if key in request.META:
            value = request.META[key]
            metadata[key] = list(value) if isinstance(value, tuple) else value
    headers = {key: value for key, value in request.META.items() if key.startswith("HTTP_")}
    return JsonResponse({
        "meta": metadata,
        "headers": headers,
        "method": request.method,
        "path": request.path,
        "path_info": request.path_info,
        "script_name": request.META.get("SCRIPT_NAME", ""),
        "get": {key: request.GET.getlist(key) for key in request.GET},
        "is_secure": request.is_secure(),
        "scheme": request.scheme,
        "host": request.get_host(),
        "absolute_uri": request.build_absolute_uri(),
        "reverse": reverse("meta"),
        "has_input": "wsgi.input" in request.META and hasattr(request.META["wsgi.input"], "read"),
        "has_errors": "wsgi.errors" in request.META and hasattr(request.META["wsgi.errors"], "write"),
    })


@csrf_exempt
def form(request: HttpRequest) -> JsonResponse:
    """A POSTed form (urlencoded or multipart) as Django parsed it."""
    return JsonResponse({
        "method": request.method,
        "post": {key: request.POST.getlist(key) for key in request.POST},
        "get": {key: request.GET.getlist(key) for key in request.GET},
        "content_type": request.content_type,
    })


@csrf_exempt
def json_echo(request: HttpRequest) -> HttpResponse:
    """A JSON body back, with the sum of its ``numbers`` (so the answer is computed, not copied)."""
    try:
        data = json.loads(request.body)
    except ValueError as exc:
        return HttpResponseBadRequest(f"not JSON: {exc}", content_type="text/plain")
    numbers = data.get("numbers", []) if isinstance(data, dict) else []
    return JsonResponse({"echo": data, "sum": sum(n for n in numbers if isinstance(n, (int, float)))})


@csrf_exempt
def upload(request: HttpRequest) -> JsonResponse:
    """Uploaded files by field: name, size and SHA-256 (read back from Django's upload handler)."""
    files = {}
    for field, uploaded in request.FILES.items():
        digest = hashlib.sha256()
        for chunk in uploaded.chunks():
            digest.update(chunk)
        files[field] = {"name": uploaded.name, "size": uploaded.size, "sha256": digest.hexdigest(),
                        "in_memory": not hasattr(uploaded, "temporary_file_path")}
    return JsonResponse({"files": files, "post": {key: request.POST.getlist(key) for key in request.POST}})


@csrf_exempt
def body(request: HttpRequest) -> JsonResponse:
    """The raw body's length and SHA-256 (the body-channel tests)."""
    raw = request.body
    return JsonResponse({"length": len(raw), "sha256": hashlib.sha256(raw).hexdigest(),
                         "content_length": request.META.get("CONTENT_LENGTH")})


def _pattern(size: int, index: int) -> bytes:
    """Chunk ``index`` of a stream: a recognisable, position-dependent pattern of ``size`` bytes."""
    unit = f"{index:08d}|".encode()
    return (unit * (size // len(unit) + 1))[:size]


def stream(request: HttpRequest) -> StreamingHttpResponse:
    """``?chunks=N&size=S``: N chunks of S bytes from a generator."""
    chunks = _int(request, "chunks", 5, 10_000)
    size = _int(request, "size", 10, 8 << 20)

    def generate() -> Iterator[bytes]:
        for index in range(chunks):
            yield _pattern(size, index)

    return StreamingHttpResponse(generate(), content_type="application/octet-stream")


def big(request: HttpRequest) -> HttpResponse:
    """``?size=N``: a plain (non-streaming) response of N bytes, the pattern of ``stream`` chunk 0."""
    return HttpResponse(_pattern(_int(request, "size", 1000, 64 << 20), 0), content_type="application/octet-stream")


def download(request: HttpRequest) -> FileResponse:
    """``?size=N``: a FileResponse of an N-byte temporary file (pattern as in ``stream``)."""
    size = _int(request, "size", 1000, 64 << 20)
    handle = tempfile.TemporaryFile()  # noqa: SIM115 (FileResponse closes it when the response is sent)
    written = 0
    index = 0
    while written < size:
        piece = _pattern(min(65536, size - written), index)
        handle.write(piece)
        written += len(piece)
        index += 1
    handle.seek(0)
    return FileResponse(handle, as_attachment=True, filename="data.bin")


def not_found(request: HttpRequest) -> HttpResponse:
    raise Http404("no such thing (the not_found view)")


class ViewError(RuntimeError):
    """What the ``error`` view raises: a test looks for its name in DEBUG pages and logs."""


def error(request: HttpRequest) -> HttpResponse:
    raise ViewError("the error view failed on purpose")


def go(request: HttpRequest) -> HttpResponse:
    """A redirect to ``meta`` (relative, so SCRIPT_NAME shows in the Location)."""
    return redirect("meta")


def set_cookie(request: HttpRequest) -> HttpResponse:
    response = HttpResponse("cookies set\n", content_type="text/plain")
    response.set_cookie("flavour", request.GET.get("flavour", "oatmeal"))
    response.set_cookie("second", "two", httponly=True)
    return response


def cookies(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"cookies": dict(request.COOKIES)})


def session(request: HttpRequest) -> JsonResponse:
    """Counts this session's visits (file sessions: shared by every worker process)."""
    count = int(request.session.get("count", 0)) + 1
    request.session["count"] = count
    return JsonResponse({"count": count, "pid": os.getpid()})


def later(request: HttpRequest) -> HttpResponse:
    """Hands the reply channel on (long-poll): ``worker.exceptions.ResponseLater``; nothing is sent now."""
    from worker.exceptions import ResponseLater

    raise ResponseLater()


def status(request: HttpRequest, code: int) -> HttpResponse:
    """A response with the status in the URL (and a custom header, set twice)."""
    response = HttpResponse(f"status {code}\n", status=code, content_type="text/plain")
    response["X-Custom"] = "yes"
    return response
