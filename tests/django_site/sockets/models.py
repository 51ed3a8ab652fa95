"""A model bound to a group (``bindings.NoteBinding``)."""

from __future__ import annotations

from django.db import models


class Note(models.Model):
    text = models.CharField(max_length=200)
    secret = models.CharField(max_length=200, default="")

    class Meta:
        app_label = "sockets"
