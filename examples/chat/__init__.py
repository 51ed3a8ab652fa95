"""A small chat site on the shared-memory layer: what ``ipc-demo`` (the README's first command) runs.

One Django project that is also its only app (label ``chat``):

* ``/``: the rooms, a live clap counter (HTTP long-poll: a view raising ``ResponseLater``),
  links to the rest;
* ``/room/<name>/``: a chat room - a WebSocket per page (``/ws/room/<name>/``), every socket
  of a room in the group ``room-<name>``, the logged-in user taken from the site's session
  cookie (``worker.generic.websockets.JsonWebsocketConsumer`` with ``http_user``); and a
  background task (count the primes below N) sent to the ``tasks`` channel, run by a
  dedicated worker (``ipc-worker --only-channels tasks``), its result pushed to the room;
* ``/stats/``: the channel layer's own counters (``global_statistics`` /
  ``channel_statistics``) and group sizes, refreshed every second;
* ``/accounts/login/``, ``/accounts/signup/``: Django's auth views.

Processes (what :mod:`examples.chat.demo` starts): one ``ipc-server``, a pool of web workers
(``--exclude-channels tasks``) and a pool of one task worker (``--only-channels tasks``), all
on one layer prefix. Settings come from the environment (:mod:`examples.chat.settings`).
"""
