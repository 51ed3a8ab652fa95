"""ASGI-shaped payloads (a ``websocket.receive``-like dict) of a given encoded size."""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["make_message", "encoded_size", "STOP"]

#: The marker a producer sends to say "this repeat is over"; tiny and ASGI-legal.
STOP: dict[str, Any] = {"stop": 1}


def encoded_size(message: dict[str, Any]) -> int:
    """Bytes of ``message`` as msgpack (the wire format of every layer measured here)."""
    return len(msgpack.packb(message, use_bin_type=True))


def make_message(size: int, reply_channel: str = "bench.reply?0123456789abcdef") -> dict[str, Any]:
    """A ``websocket.receive``-like dict whose msgpack encoding is ``size`` bytes (or the
    smallest possible when ``size`` is below the fixed fields)."""
    message: dict[str, Any] = {
        "reply_channel": reply_channel,
        "path": "/chat",
        "order": 0,
        "text": "",
    }
    # The str header grows with the length (1, 2, 3 or 5 bytes), so converge in a few steps.
    for _ in range(4):
        missing = size - encoded_size(message)
        if missing == 0:
            break
        message["text"] = "x" * max(0, len(message["text"]) + missing)
    short = size - encoded_size(message)
    if 0 < short < 8:  # the text's header just grew by a byte: pad the (short) path instead
        message["path"] += "/" * short
    return message
