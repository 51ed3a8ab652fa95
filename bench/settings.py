"""Run settings: the quick and default presets, and the scaling used for tiny smoke runs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Settings", "SCENARIOS", "DEFAULT_SIZES", "DEFAULT_MEMBERS", "WIDE_CHANNELS"]

#: Scenario names, in the order they run and are reported.
SCENARIOS = ("pingpong", "oneway", "mpmc", "group", "wide", "idle", "mixed")
DEFAULT_SIZES = (100, 1024, 65536)
DEFAULT_MEMBERS = (100, 1000)
#: Channels one receive call of the "wide" scenario listens on (and the group it is fed by).
WIDE_CHANNELS = 100


@dataclass
class Settings:
    layers: list[str]
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_SIZES))
    members: list[int] = field(default_factory=lambda: list(DEFAULT_MEMBERS))
    quick: bool = False
    #: Seconds each repeat of a time-bounded scenario runs (ping-pong, one-way, N->M).
    duration: float = 1.0
    #: Most messages (or round trips) in one repeat, whatever the duration.
    count: int = 1_000_000
    #: Most payload bytes one channel may hold (its capacity is this / the message size).
    bytes_budget: int = 128 << 20
    repeats: int = 3
    warmup: int = 200
    group_rounds: int = 20
    idle_seconds: float = 5.0
    mixed_seconds: float = 6.0
    #: Well under every layer's one-way rate here, so the tail is not a queue.
    rate: float = 500.0
    producers: int = 2
    consumers: int = 2
    #: A receive that waits longer than this is an error (the peer is gone or stuck).
    recv_timeout: float = 10.0
    pin: bool = True
    #: Spin budget (us) of the shared-memory layers; None: each layer's default.
    spin_us: int | None = None
    capacity: int = 100_000
    #: How the Channels 4 layers are driven: "native" (each role one coroutine, every
    #: operation a plain await) or "per-call" (run_until_complete per operation).
    aio_driving: str = "native"
    #: How ipc_aio's receive is woken: "fd" or "thread" (``--aio-wakeup``); None: the
    #: layer's default (fd).
    aio_wakeup: str | None = None

    @classmethod
    def preset(cls, quick: bool, layers: list[str]) -> Settings:
        if not quick:
            return cls(layers=layers)
        return cls(
            layers=layers,
            quick=True,
            duration=0.1,
            repeats=2,
            warmup=50,
            group_rounds=2,
            recv_timeout=5.0,
            idle_seconds=0.5,
            mixed_seconds=0.5,
        )

    def scaled(self, scale: float) -> Settings:
        """Shrink (or grow) every duration and count by ``scale``, keeping each >= 1."""
        if scale == 1.0:
            return self
        return Settings(
            **{
                **asdict(self),
                "duration": self.duration * scale,
                "count": max(1, int(self.count * scale)),
                "warmup": max(1, int(self.warmup * scale)),
                "group_rounds": max(1, round(self.group_rounds * scale)),
                "idle_seconds": self.idle_seconds * scale,
                "mixed_seconds": self.mixed_seconds * scale,
            }
        )

    def capacity_for(self, size: int | None) -> int:
        """Channel capacity for messages of ``size`` bytes: at most ``bytes_budget`` queued
        (so a fast producer cannot fill Redis or the segment), never below 100."""
        if not size:
            return self.capacity
        return max(100, min(self.capacity, self.bytes_budget // size))

    def as_record(self) -> dict[str, Any]:
        return asdict(self)
