"""Percentiles and medians over plain lists of numbers (no numpy needed)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["percentile", "latency_summary", "median_of_repeats"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0..100) of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    if q <= 0:
        return float(sorted_values[0])
    rank = math.ceil(q / 100.0 * len(sorted_values))
    return float(sorted_values[min(len(sorted_values), max(1, rank)) - 1])


def latency_summary(samples_ns: Iterable[int], quantiles: Sequence[float]) -> dict[str, float]:
    """``{"p50_us": ..., ..., "max_us": ..., "n": ...}`` from samples in nanoseconds."""
    ordered = sorted(samples_ns)
    out: dict[str, float] = {}
    for q in quantiles:
        out[_pname(q)] = percentile(ordered, q) / 1000.0
    out["max_us"] = ordered[-1] / 1000.0 if ordered else math.nan
    out["mean_us"] = statistics.fmean(ordered) / 1000.0 if ordered else math.nan
    out["n"] = len(ordered)
    return out


def _pname(q: float) -> str:
    text = f"{q:g}".replace(".", "_")
    return f"p{text}_us"


def median_of_repeats(repeats: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Median of each metric over repeats (keys missing from a repeat are ignored)."""
    keys: list[str] = []
    for rep in repeats:
        for key in rep:
            if key not in keys:
                keys.append(key)
    out: dict[str, float] = {}
    for key in keys:
        values = [float(r[key]) for r in repeats if key in r and not _isnan(r[key])]
        out[key] = statistics.median(values) if values else math.nan
    return out


def _isnan(value: float) -> bool:
    return isinstance(value, float) and math.isnan(value)
