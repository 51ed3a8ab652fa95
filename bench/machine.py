"""The machine record: what produced the figures (CPU, cores, kernel, Python, versions)."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from typing import Any

__all__ = ["machine_record"]

_PACKAGES = ("redis", "hiredis", "channels_redis", "channels", "asgiref", "msgpack", "cffi", "matplotlib")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _ipc_layer_version() -> str | None:
    try:
        import ipc_layer
    except Exception:  # not written yet, or broken: the layer is reported as skipped
        return None
    return getattr(ipc_layer, "__version__", None)


def _git_commit() -> str | None:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError):
        pass
    return None


def machine_record(redis_version: str | None, packages: tuple[str, ...] = _PACKAGES) -> dict[str, Any]:
    """What produced the figures; ``packages``: the distributions whose versions matter to the run."""
    versions: dict[str, str | None] = {name: _version(name) for name in packages}
    versions["redis-server"] = redis_version
    versions["ipc_layer"] = _ipc_layer_version()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": versions,
        "commit": _git_commit(),
    }
