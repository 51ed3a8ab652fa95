"""Template context: which worker process rendered the page (the pool spreads requests)."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["worker_pid"]


def worker_pid(request: Any) -> dict[str, int]:
    return {"worker_pid": os.getpid()}
