"""Helpers for the tests of ``IPCChannelLayer``: unique prefixes and cleanup.

Prefixes follow ``tests/conftest.py``'s scheme (``t<pid>_<n>_<hex>``), so
its end-of-session check also catches segment files these tests leave.
Only the standard library and ``_ringbuf`` are imported at module level.
"""
from __future__ import annotations

import glob
import itertools
import os
import secrets
from typing import Any

import _ringbuf

#: Small segments: tests never need the 64 MiB default.
TEST_SEGMENT_SIZE = 16 << 20

_counter = itertools.count(10_000)


def unique_prefix() -> str:
    """A prefix no other test, process or concurrent run uses."""
    return f"t{os.getpid()}_{next(_counter)}_{secrets.token_hex(3)}"


def remove_segment(prefix: str) -> None:
    """Unlink the segment of ``prefix`` (even while attached) and any file it left."""
    try:
        _ringbuf.unlink(prefix, force=True)
    except _ringbuf.SegmentNotFound:
        pass
    for path in glob.glob(f"/dev/shm/rbuf.{glob.escape(prefix)}*"):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def make_layer(prefix: str, **config: Any) -> Any:
    """An ``IPCChannelLayer`` on ``prefix`` with a test-sized segment."""
    from ipc_layer import IPCChannelLayer

    config.setdefault("segment_size", TEST_SEGMENT_SIZE)
    return IPCChannelLayer(prefix=prefix, **config)
