"""Rooms and their messages, background tasks, and the clap counter."""

from __future__ import annotations

from django.conf import settings
from django.db import models

__all__ = ["ChatMessage", "Counter", "Room", "Task"]

#: Longest chat message (characters); longer ones are refused with an error frame.
MAX_MESSAGE = 500


class Room(models.Model):
    name = models.SlugField(max_length=40, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def group(self) -> str:
        """The channel-layer group of the room's sockets."""
        return f"room-{self.name}"


class ChatMessage(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    text = models.CharField(max_length=MAX_MESSAGE)
    created = models.DateTimeField(auto_now_add=True, db_index=True)

    def as_event(self) -> dict[str, object]:
        """What the room's sockets get for this message."""
        return {"type": "message", "id": self.pk, "user": self.user.get_username(), "text": self.text,
                "at": self.created.isoformat()}


class Task(models.Model):
    QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, DONE, FAILED)]

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    room = models.ForeignKey(Room, on_delete=models.SET_NULL, null=True, blank=True)
    n = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=STATUSES, default=QUEUED)
    result = models.BigIntegerField(null=True, blank=True)
    error = models.CharField(max_length=200, blank=True)
    worker_pid = models.IntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    seconds = models.FloatField(null=True, blank=True)

    def as_event(self) -> dict[str, object]:
        return {"type": "task", "id": self.pk, "user": self.user.get_username(), "n": self.n,
                "status": self.status, "result": self.result, "error": self.error,
                "worker_pid": self.worker_pid, "seconds": self.seconds}


class Counter(models.Model):
    name = models.CharField(max_length=40, primary_key=True)
    value = models.BigIntegerField(default=0)
