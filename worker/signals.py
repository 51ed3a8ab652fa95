"""Signals the worker loop sends (Channels 1.x names), for code that wraps every consumer.

- ``worker_ready(sender=WorkerLoop)``: the worker booted (Django set up, layer and
  router loaded) and is about to take its first message.
- ``consumer_started(sender=WorkerLoop, environ=None, message=...)`` /
  ``consumer_finished(sender=WorkerLoop, message=...)``: around every consumer call,
  inside Django's ``request_started``/``request_finished`` (so ``close_old_connections``
  runs on each side of them, as for a view).
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["consumer_finished", "consumer_started", "worker_ready"]

consumer_started = Signal()
consumer_finished = Signal()
worker_ready = Signal()
