"""The site's pages and its small JSON API (chat itself is on the WebSocket: consumers.py)."""

from __future__ import annotations

import json
import os
from typing import Any

from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from worker import Channel

from . import longpoll, stats
from .events import send_to_room
from .models import ChatMessage, Room, Task
from .tasks import MAX_N, TASKS

__all__ = ["counter", "counter_poll", "go", "home", "room", "signup", "start_task", "static", "stats_json",
           "stats_page", "task_status"]

#: Messages of a room shown when its page opens.
HISTORY = 50


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    rooms = Room.objects.annotate(lines=Count("messages")).order_by("name")
    return render(request, "chat/home.html", {"rooms": rooms, "claps": longpoll.current()})


@require_GET
def go(request: HttpRequest) -> HttpResponse:
    """The home page's "open a room" form: to ``/room/<name>/`` (names are slugs)."""
    from django.utils.text import slugify

    name = slugify(request.GET.get("name", ""))[:40]
    if not name:
        return redirect("home")
    return redirect("room", name=name)


@login_required
@require_GET
def room(request: HttpRequest, name: str) -> HttpResponse:
    chat_room, _ = Room.objects.get_or_create(name=name)
    history = list(ChatMessage.objects.filter(room=chat_room).select_related("user").order_by("-created")[:HISTORY])
    history.reverse()
    return render(request, "chat/room.html", {
        "room": chat_room, "history": [line.as_event() for line in history], "max_n": MAX_N,
    })


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect("home")
    return render(request, "registration/signup.html", {"form": form})


def _json_body(request: HttpRequest) -> dict[str, Any]:
    if request.content_type == "application/json":
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return request.POST.dict()


@require_POST
def start_task(request: HttpRequest) -> HttpResponse:
    """Queue a prime count (``n``) started from ``room``; 202 with its id. The result comes to the room."""
    if not request.user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=401)
    data = _json_body(request)
    try:
        n = int(data.get("n", ""))
    except (TypeError, ValueError):
        return JsonResponse({"error": "n must be an integer"}, status=400)
    if not 2 <= n <= MAX_N:
        return JsonResponse({"error": f"n must be between 2 and {MAX_N:,}"}, status=400)
    room_name = data.get("room")
    chat_room = get_object_or_404(Room, name=room_name) if room_name else None
    task = Task.objects.create(user=request.user, room=chat_room, n=n)
    # Both sends leave when the view returns, in this order: the room hears "queued"
    # before the task worker can say "running".
    if chat_room is not None:
        send_to_room(chat_room.name, task.as_event())
    Channel(TASKS).send({"id": task.pk})
    return JsonResponse({"id": task.pk, "status": task.status, "url": f"/tasks/{task.pk}/"}, status=202)


@require_GET
def task_status(request: HttpRequest, pk: int) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("user"), pk=pk)
    return JsonResponse(task.as_event())


@require_http_methods(["GET", "POST"])
def counter(request: HttpRequest) -> HttpResponse:
    """GET: the clap count; POST: one clap more (every waiting long-poll is answered)."""
    if request.method == "POST":
        return JsonResponse({"value": longpoll.clap()})
    return JsonResponse({"value": longpoll.current()})


counter_poll = require_GET(longpoll.poll)


@require_GET
def stats_page(request: HttpRequest) -> HttpResponse:
    return render(request, "chat/stats.html", {"stats": stats.snapshot()})


@require_GET
def stats_json(request: HttpRequest) -> HttpResponse:
    return JsonResponse(stats.snapshot())


def static(request: HttpRequest, path: str) -> HttpResponse:
    """The site's own static files (no web server in front of ipc-server in the demo)."""
    from django.conf import settings
    from django.views.static import serve

    return serve(request, path, document_root=os.fspath(settings.STATIC_ROOT_DIR))
