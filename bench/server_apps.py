"""The one tiny application every stack of ``python -m bench server`` serves, in each stack's form.

* :func:`asgi3_app`: ASGI 3 (Daphne 4, uvicorn): ``GET`` any path -> 200
  ``Hello, world!``; WebSockets accepted and echoed.
* :func:`run_worker`: the same behaviour as an ASGI 1 worker on a channel
  layer (``ipc-server`` in front): a blocking receive on the request and
  WebSocket channels, one reply per message.
* :class:`DirectLayer`: the "direct call" baseline: ``ipc-server``'s own
  HTTP code with the application answering inside ``send``, so the only
  difference from the ``ipc`` stack is the layer hop.

Run a worker with ``python -m bench.server_apps worker --layer PATH --config JSON``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from ipc_layer import InMemoryChannelLayer
from ipc_layer.loading import load_layer

__all__ = ["BODY", "HEADERS", "DirectLayer", "asgi3_app", "run_worker"]

BODY = b"Hello, world!"
HEADERS = [[b"content-type", b"text/plain"], [b"content-length", str(len(BODY)).encode()]]
WORKER_CHANNELS = ["http.request", "websocket.connect", "websocket.receive"]


async def asgi3_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await receive()  # the (empty) request body
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(bytes(k), bytes(v)) for k, v in HEADERS]})
        await send({"type": "http.response.body", "body": BODY})
    elif scope["type"] == "websocket":
        while True:
            event = await receive()
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                if event.get("text") is not None:
                    await send({"type": "websocket.send", "text": event["text"]})
                else:
                    await send({"type": "websocket.send", "bytes": event["bytes"]})
            elif event["type"] == "websocket.disconnect":
                return
    elif scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def set_sched(policy: str) -> None:
    """Run this process under ``SCHED_BATCH`` (``batch``) or the default policy (``other``).

    ``SCHED_BATCH`` needs no privilege. A batch task woken by a send does
    not preempt the task that woke it: on a core shared with the server,
    the server finishes its reactor turn (reading and sending every ready
    request) before the worker runs and takes them all, so the two switch
    once per batch instead of once per request.
    """
    if policy == "batch":
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    elif policy != "other":
        raise ValueError(f"scheduling policy must be 'batch' or 'other', got {policy!r}")


def run_worker(layer: Any) -> int:
    """The ASGI 1 form of :func:`asgi3_app`, until SIGTERM."""
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    response = {"status": 200, "headers": HEADERS, "content": BODY}
    print("worker ready", flush=True)
    while not stopping:
        channel, message = layer.receive(WORKER_CHANNELS, block=True)
        if channel is None or message is None:
            continue
        reply = message["reply_channel"]
        try:
            if channel == "http.request":
                layer.send(reply, response)
            elif channel == "websocket.connect":
                layer.send(reply, {"accept": True})
            elif "text" in message:
                layer.send(reply, {"text": message["text"]})
            else:
                layer.send(reply, {"bytes": message["bytes"]})
        except layer.ChannelFull:
            pass  # the server is gone or swamped; the bench counts what arrives
    return 0


class DirectLayer(InMemoryChannelLayer):
    """An in-memory layer whose ``http.request`` sends are answered at once, in-process.

    ``router`` is the server's reply router (set after the server is made):
    the reply goes straight to the request, as if the application were a
    function call inside the server.
    """

    router: Any = None
    reactor: Any = None

    def send(self, channel: str, message: dict[str, Any]) -> None:
        if channel == "http.request" and self.router is not None:
            # On the next reactor turn, as a reply from a worker would come
            # (never inside the request's own parsing).
            self.reactor.callLater(0, self.router.dispatch, message["reply_channel"],
                                   {"status": 200, "headers": HEADERS, "content": BODY})
            return
        super().send(channel, message)


def _serve_direct(port: int) -> int:
    """``ipc-server``'s HTTP code on ``port`` with the application called directly."""
    from twisted.internet import reactor

    from server.config import ServerConfig
    from server.server import Server

    layer = DirectLayer()
    srv = Server(layer, [f"tcp:port={port}:interface=127.0.0.1"], ServerConfig(), reactor=reactor)
    layer.router, layer.reactor = srv.router, reactor
    reactor.callWhenRunning(srv.start)
    print("direct ready", flush=True)
    reactor.run()  # type: ignore[misc]  # zope-declared method; plain mypy misreads it
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.server_apps")
    sub = parser.add_subparsers(dest="what", required=True)
    worker = sub.add_parser("worker", help="the ASGI 1 worker for the ipc stacks")
    worker.add_argument("--layer", required=True)
    worker.add_argument("--config", type=json.loads, default={})
    worker.add_argument("--sched", choices=("other", "batch"), default="other",
                        help="the worker's scheduling policy (default other: the kernel's default)")
    direct = sub.add_parser("direct", help="the direct-call baseline server")
    direct.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.what == "worker":
        set_sched(args.sched)
        return run_worker(load_layer(args.layer, args.config))
    return _serve_direct(args.port)


if __name__ == "__main__":
    sys.exit(main())
