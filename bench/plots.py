"""PNG figures of one run (matplotlib, Agg backend; no display needed)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from bench.drivers import LAYERS
from bench.report import layer_label

__all__ = ["grouped_bars", "write_plots"]

_COLORS = ["#1b9e77", "#66a61e", "#7570b3", "#d95f02", "#e7298a", "#666666", "#a6761d"]


def _color(layer: str) -> str:
    names = list(LAYERS)
    return _COLORS[names.index(layer) % len(_COLORS)] if layer in names else "#000000"


def _ok(rows: list[dict[str, Any]], scenario: str) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if r.get("type") == "result" and r["scenario"] == scenario and not r.get("error")
    ]


def _layers(rows: list[dict[str, Any]]) -> list[str]:
    present = {r["layer"] for r in rows}
    return [name for name in LAYERS if name in present]


def _sizes(rows: list[dict[str, Any]]) -> list[int]:
    return sorted({int(r["params"]["size"]) for r in rows if "size" in r["params"]})


def _size_label(size: int) -> str:
    from bench.scenarios import size_label

    return size_label(size)


def grouped_bars(ax: Any, groups: list[str], series: list[tuple[str, list[float], str]]) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values, color) in enumerate(series):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, values, width, label=name, color=color)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups)


def _latency(plt: Any, rows: list[dict[str, Any]], path: str) -> bool:
    rows = _ok(rows, "pingpong")
    if not rows:
        return False
    sizes, layers = _sizes(rows), _layers(rows)
    keys = [("p50_us", "p50"), ("p90_us", "p90"), ("p99_us", "p99"), ("max_us", "max")]
    shades = ["#2166ac", "#67a9cf", "#ef8a62", "#b2182b"]
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes, strict=True):
        by_layer = {r["layer"]: r for r in rows if r["params"]["size"] == size}
        present = [layer for layer in layers if layer in by_layer]
        series = [
            (title, [by_layer[layer]["metrics"].get(key) or float("nan") for layer in present], shade)
            for (key, title), shade in zip(keys, shades, strict=True)
        ]
        grouped_bars(ax, [layer_label(layer).replace(" ", "\n", 1) for layer in present], series)
        ax.set_yscale("log")
        ax.set_title(f"round trip, {_size_label(size)}")
        ax.set_ylabel("microseconds (log)")
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Ping-pong latency percentiles between two processes (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _throughput(plt: Any, rows: list[dict[str, Any]], path: str) -> bool:
    panels = [(s, _ok(rows, s)) for s in ("oneway", "mpmc")]
    panels = [(s, r) for s, r in panels if r]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (scenario, srows) in zip(axes[0], panels, strict=True):
        sizes, layers = _sizes(srows), _layers(srows)
        metric = {(r["layer"], r["params"]["size"]): r["metrics"].get("msgs_per_s") for r in srows}
        series = [
            (layer_label(layer), [metric.get((layer, s)) or float("nan") for s in sizes], _color(layer))
            for layer in layers
        ]
        grouped_bars(ax, [_size_label(s) for s in sizes], series)
        ax.set_yscale("log")
        p = srows[0]["params"]
        title = "one producer -> one consumer" if scenario == "oneway" else (
            f"{p['producers']} producers -> {p['consumers']} consumers"
        )
        ax.set_title(title)
        ax.set_ylabel("messages per second (log)")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Throughput (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _group(plt: Any, rows: list[dict[str, Any]], path: str) -> bool:
    rows = _ok(rows, "group")
    if not rows:
        return False
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "^", "D"]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for layer in _layers(rows):
        for i, size in enumerate(_sizes(rows)):
            points = sorted(
                (r["params"]["members"], r["metrics"].get("deliver_us"))
                for r in rows
                if r["layer"] == layer and r["params"]["size"] == size
            )
            if not points:
                continue
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                linestyle=styles[i % len(styles)],
                marker=markers[i % len(markers)],
                color=_color(layer),
                label=f"{layer_label(layer)}, {_size_label(size)}",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("group members (log)")
    ax.set_ylabel("microseconds until every member has it (log)")
    ax.set_title("Group fan-out vs member count (lower is better)")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _mixed(plt: Any, rows: list[dict[str, Any]], path: str) -> bool:
    rows = _ok(rows, "mixed")
    if not rows:
        return False
    layers = _layers(rows)
    by_layer = {r["layer"]: r for r in rows}
    keys = [("p50_us", "p50"), ("p99_us", "p99"), ("p99_9_us", "p99.9"), ("max_us", "max")]
    shades = ["#2166ac", "#67a9cf", "#ef8a62", "#b2182b"]
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    series = [
        (title, [by_layer[layer]["metrics"].get(key) or float("nan") for layer in layers], shade)
        for (key, title), shade in zip(keys, shades, strict=True)
    ]
    grouped_bars(ax, [layer_label(layer) for layer in layers], series)
    ax.set_yscale("log")
    ax.set_ylabel("one-way latency, microseconds (log)")
    rate = rows[0]["params"].get("rate")
    ax.set_title(f"Mixed sizes at {rate:g} msgs/s: latency tail (lower is better)")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.tick_params(axis="x", labelsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


_FIGURES: list[tuple[str, Callable[[Any, list[dict[str, Any]], str], bool]]] = [
    ("latency.png", _latency),
    ("throughput.png", _throughput),
    ("group.png", _group),
    ("mixed.png", _mixed),
]


def write_plots(rows: list[dict[str, Any]], out_dir: str) -> list[str]:
    """Write every figure that has data; returns the file names written (relative)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in _FIGURES:
        if draw(plt, rows, os.path.join(out_dir, name)):
            written.append(name)
    return written
