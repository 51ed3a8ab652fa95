"""Views that start the consumer side: a background task, a delayed message, a long-poll."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse, JsonResponse

from worker import Channel, Group
from worker.delay import send_delayed
from worker.exceptions import ResponseLater

from .models import Note

POLLERS = Group("pollers")


def login(request: HttpRequest) -> JsonResponse:
    """Test-site only: log in as ``?user=`` (created on first use), so sockets get the cookie."""
    from django.contrib.auth import login as django_login
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username=request.GET["user"])
    django_login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    return JsonResponse({"user": user.username})


def task(request: HttpRequest) -> HttpResponse:
    Channel("thumbnails").send({"id": request.GET["id"]})
    return HttpResponse("queued\n")


def delay(request: HttpRequest) -> JsonResponse:
    sent = time.time()
    send_delayed("delayed.done", {"id": request.GET["id"]}, int(request.GET["ms"]))
    return JsonResponse({"sent": sent})


def poll(request: HttpRequest) -> HttpResponse:
    """Answer later: the reply channel waits in the group until ``notify``."""
    POLLERS.add(request.reply_channel)
    raise ResponseLater()


def notify(request: HttpRequest) -> JsonResponse:
    """One group send answers every waiting poller; then the group is emptied."""
    waiting = POLLERS.channel_names()
    POLLERS.send({"status": 200, "headers": [[b"content-type", b"text/plain"]],
                  "content": request.GET.get("text", "news").encode()}, immediately=True)
    for name in waiting:
        POLLERS.discard(name)
    return JsonResponse({"answered": len(waiting)})


def pollers(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"waiting": len(POLLERS.channel_names())})


def note(request: HttpRequest) -> JsonResponse:
    """Save (or delete) a Note: the binding sends it to the ``notes`` group."""
    if "delete" in request.GET:
        Note.objects.get(pk=int(request.GET["delete"])).delete()
        return JsonResponse({"deleted": True})
    if "pk" in request.GET:
        obj = Note.objects.get(pk=int(request.GET["pk"]))
        obj.text = request.GET["text"]
        obj.save()
    else:
        obj = Note.objects.create(text=request.GET["text"], secret="hidden")
    return JsonResponse({"pk": obj.pk})
