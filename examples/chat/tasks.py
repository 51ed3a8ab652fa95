"""The background task: count the primes below N, on the ``tasks`` channel's own worker.

A view saves a :class:`~examples.chat.models.Task` and sends ``{"id": pk}`` to ``tasks``
(``Channel("tasks").send``); the demo runs one worker with ``--only-channels tasks`` for it,
so a long count never holds up a page or a chat line (the web workers do not take
``tasks``). The worker marks the task running, counts, saves the result with its own pid
and the time taken, and pushes the task's state to the room it was started from.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from worker.message import Message

from .events import send_to_room
from .models import Task

__all__ = ["MAX_N", "TASKS", "count_primes", "run_task"]

logger = logging.getLogger(__name__)

#: The channel of the background tasks.
TASKS = "tasks"
#: Largest N accepted: the count takes well under a second here (0.3 s), far inside the worker's --timeout.
MAX_N = 20_000_000


def count_primes(n: int) -> int:
    """How many primes are below ``n`` (a sieve of Eratosthenes on a bytearray)."""
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return sum(sieve)


def run_task(message: Message, **kwargs: Any) -> None:
    """The ``tasks`` consumer."""
    task_id = message.get("id")
    if not isinstance(task_id, int) or isinstance(task_id, bool):
        logger.warning("dropped a message on %r: 'id' must be an int, got %r", TASKS, task_id)
        return
    task = Task.objects.select_related("user", "room").filter(pk=task_id).first()
    if task is None:
        logger.warning("dropped a message on %r: no task %d", TASKS, task_id)
        return
    task.status, task.worker_pid = Task.RUNNING, os.getpid()
    task.save(update_fields=["status", "worker_pid"])
    room = task.room.name if task.room else None
    if room:
        send_to_room(room, task.as_event(), immediately=True)  # "running" now, not with the result
    started = time.perf_counter()
    try:
        task.result = count_primes(task.n)
        task.status = Task.DONE
    except MemoryError:
        task.status, task.error = Task.FAILED, f"not enough memory to sieve {task.n:,} numbers"
    task.seconds = round(time.perf_counter() - started, 4)
    task.save(update_fields=["status", "result", "error", "seconds"])
    logger.info("task %d: %s primes below %d in %.3f s", task.pk, task.result, task.n, task.seconds)
    if room:
        send_to_room(room, task.as_event())
