"""Low-level consumers of the test site: called with a ``worker.message.Message``, they answer
on the reply channel themselves, without Django's view machinery."""

from __future__ import annotations

from typing import Any


def raw_http(message: Any, **kwargs: Any) -> None:
    """``/x/``: a per-URL low-level HTTP consumer (routed ahead of the default one)."""
    message.reply_channel.send({
        "status": 200,
        "headers": [[b"content-type", b"text/plain"], [b"x-consumer", b"raw_http"]],
        "content": f"raw consumer saw {message['method']} {message['path']}\n".encode(),
    })
