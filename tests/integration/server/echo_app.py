"""A tiny ASGI 1 application for the server's integration tests: no Django, the layer API only.

Run as ``python -m tests.integration.server.echo_app --prefix P``. It
serves, until SIGTERM:

* ``GET/POST /echo``: 200 with the request body (read from the body channel
  when there is one) and ``x-method``/``x-path``/``x-query`` headers;
* ``/stream``: three chunks, sent as separate messages;
* ``/slow``: no answer (the server's http_timeout answers);
* ``/delay``: ``/echo`` after a second;
* ``/headers``: the request's headers as the body, one ``name: value`` a line;
* UDP: each datagram answered with ``echo:`` + its data;
* WebSockets: accepted (with ``/reject`` rejected), text and bytes echoed,
  the text ``close`` closes with 4000; disconnects are recorded and the
  count is sent to the next socket that says ``disconnects?``.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from typing import Any

from ipc_layer.loading import load_layer

CHANNELS = ["http.request", "websocket.connect", "websocket.receive", "websocket.disconnect", "http.disconnect",
            "udp.receive"]


#: Response chunk size: well under the layer's 1 MiB message limit.
CHUNK = 256 * 1024


def _send_retrying(layer: Any, channel: str, message: dict[str, Any]) -> None:
    """Replies "wait and retry" on a full channel (www.rst)."""
    while True:
        try:
            layer.send(channel, message)
            return
        except layer.ChannelFull:
            time.sleep(0.001)


def _read_body(layer: Any, message: dict[str, Any]) -> bytes:
    body = message.get("body", b"")
    channel = message.get("body_channel")
    while channel:
        got, chunk = layer.receive([channel], block=True)
        if got is None:
            continue
        if chunk["closed"]:
            return b""
        body += chunk["content"]
        if not chunk["more_content"]:
            break
    return body


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    layer = load_layer("ipc_layer.IPCChannelLayer", {"prefix": args.prefix, "blocking_timeout": 0.5})
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    disconnects = 0
    print("echo app ready", flush=True)
    while not stopping:
        channel, message = layer.receive(CHANNELS, block=True)
        if channel is None:
            continue
        if channel == "http.request":
            reply = message["reply_channel"]
            path = message["path"]
            if path == "/slow":
                continue
            if path == "/delay":  # answers after a second (graceful-stop test)
                time.sleep(1.0)
            if path == "/stream":
                layer.send(reply, {"status": 200, "headers": [[b"content-type", b"text/plain"]],
                                   "content": b"one,", "more_content": True})
                layer.send(reply, {"content": b"two,", "more_content": True})
                layer.send(reply, {"content": b"three", "more_content": False})
                continue
            if path == "/headers":
                body = b"\n".join(name + b": " + value for name, value in message["headers"])
            else:
                body = _read_body(layer, message)
            # A response bigger than one layer message goes out in chunks.
            head = {"status": 200, "headers": [
                [b"content-type", b"application/octet-stream"], [b"content-length", str(len(body)).encode()],
                [b"x-method", message["method"].encode()], [b"x-path", path.encode("utf-8")],
                [b"x-query", message["query_string"]]]}
            pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] or [b""]
            for i, piece in enumerate(pieces):
                part = dict(head) if i == 0 else {}
                part.update(content=piece, more_content=i < len(pieces) - 1)
                _send_retrying(layer, reply, part)
        elif channel == "websocket.connect":
            accept = message["path"] != "/reject"
            layer.send(message["reply_channel"], {"accept": accept})
        elif channel == "websocket.receive":
            reply = message["reply_channel"]
            if message.get("text") == "close":
                layer.send(reply, {"close": 4000})
            elif message.get("text") == "disconnects?":
                layer.send(reply, {"text": str(disconnects)})
            elif "text" in message:
                layer.send(reply, {"text": message["text"]})
            else:
                layer.send(reply, {"bytes": message["bytes"]})
        elif channel == "websocket.disconnect":
            disconnects += 1
        elif channel == "udp.receive":
            layer.send(message["reply_channel"], {"data": b"echo:" + message["data"]})
    layer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
