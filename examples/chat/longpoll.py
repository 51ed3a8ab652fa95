"""The clap counter, live by HTTP long-poll: a request that is answered when the value changes.

``GET /counter/poll/?since=N`` is a Django view (:func:`poll`) that answers at once if the
counter is no longer ``N``, and otherwise raises ``worker.exceptions.ResponseLater``: the
default HTTP consumer then sends nothing, and the request's reply channel
(``request.reply_channel``) waits in the group ``counter-pollers`` while the worker goes on
with other messages. A waiting
browser costs a group member and an open socket in ``ipc-server``, no worker and no CPU.
``POST /counter/`` (a view) adds one and calls :func:`notify`, whose one group send
answers every waiting request. A client that goes away before its answer makes the
server send ``http.disconnect``, whose consumer (:func:`gone`) leaves the group.

No wake-up is lost, with any number of workers (each step is in this order):

======================  ================================================================
poll                    notify
======================  ================================================================
1. join the group       1. save the new value (committed: autocommit)
2. read the value       2. list the group's members
3. if it is not         3. send the answer to the group, now (not deferred: step 4
   ``since``: answer       must not run before it)
   now, leave the group 4. take the members listed in 2 out of the group
======================  ================================================================

A poller that joined after notify's step 2 read the value after step 1, so it saw the
new value and answered itself (it may be answered twice: the server drops the second
reply of a finished request). A poller that joined after step 2 but before step 3 is
answered by the send and stays a member; the next notify answers it once more (dropped)
and removes it. Nobody who waits for a value that has changed is left waiting.

Browsers give up after 45 s (``counter.js``) and ask again, inside ``ipc-server``'s
``--http-timeout``.
"""

from __future__ import annotations

import json
from typing import Any

from django.db.models import F
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from worker import Group
from worker.exceptions import ResponseLater
from worker.message import Message

from .models import Counter

__all__ = ["COUNTER", "POLLERS", "clap", "current", "gone", "notify", "poll"]

#: The counter's row, and the group of the requests waiting for it to change.
COUNTER = "claps"
POLLERS = "counter-pollers"


def current() -> int:
    row = Counter.objects.filter(name=COUNTER).values_list("value", flat=True).first()
    return row or 0


def clap() -> int:
    """Add one to the counter and answer every waiting poll; the new value."""
    Counter.objects.filter(name=COUNTER).update(value=F("value") + 1)  # the row: migration 0002
    value = current()
    notify(value)
    return value


def _answer(value: int) -> dict[str, Any]:
    return {
        "status": 200,
        "headers": [[b"content-type", b"application/json"], [b"cache-control", b"no-store"]],
        "content": json.dumps({"value": value}).encode(),
    }


def notify(value: int) -> None:
    """Answer every request waiting in :data:`POLLERS` with ``value`` (steps 2-4 above)."""
    group = Group(POLLERS)
    waiting = group.channel_names()
    group.send(_answer(value), immediately=True)
    for name in waiting:
        group.discard(name)


def poll(request: HttpRequest) -> HttpResponse:
    """``GET /counter/poll/?since=N``: answer when the counter is not ``N`` (now or later)."""
    try:
        since = int(request.GET["since"])
    except (KeyError, ValueError):
        return HttpResponseBadRequest("?since=<the value you have> (an integer) is required\n",
                                      content_type="text/plain")
    reply = request.reply_channel
    group = Group(POLLERS)
    group.add(reply)  # step 1, before the read: see the table above
    value = current()
    if value == since:
        raise ResponseLater()  # notify() answers, or gone() cleans up
    group.discard(reply)
    return JsonResponse({"value": value}, headers={"Cache-Control": "no-store"})


def gone(message: Message, **kwargs: Any) -> None:
    """``http.disconnect`` of a poll: the browser left (or gave up), its reply channel leaves the group."""
    if message.reply_channel is not None:
        Group(POLLERS).discard(message.reply_channel)
