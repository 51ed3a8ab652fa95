"""Result rows -> ratio column, markdown tables and JSON lines.

A result row is a plain dict (one per case)::

    {"type": "result", "scenario": "pingpong", "layer": "ipc", "label": "100 B",
     "params": {...}, "metrics": {"p50_us": ...}, "repeats": [...], "pinning": {...},
     "limit": False, "error": None, "x_vs_channels_redis": 412.0}

Every figure is compared with channels_redis at the same scenario and label: the ratio is
"how many times better" (its time / ours for latencies and CPU, ours / its for rates), so
``> 1`` always means better than channels_redis.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from bench.drivers import LAYERS, REFERENCE_LAYER, LayerSpec, reference_layer
from bench.scenarios import PRIMARY, RATIOS

__all__ = ["add_ratios", "aio_driving_note", "render_markdown", "write_jsonl", "RATIO_KEY"]

RATIO_KEY = f"x_vs_{REFERENCE_LAYER}"

_TITLES = {
    "pingpong": "Ping-pong round trip between two processes",
    "oneway": "One-way throughput, one producer process -> one consumer process",
    "mpmc": "N producers -> M consumers on one channel, total throughput",
    "group": "Group send: time until every member has the message (members drained by one process)",
    "wide": "One receive over 100 channels, fed by a group send to all of them",
    "idle": "Idle cost: CPU of a receiver blocked on an empty channel",
    "mixed": "Mixed sizes at a steady rate: one-way latency tail",
}


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Set ``row["ratios"]`` ({metric: ratio}) and ``row["x_vs_<reference>"]`` (the
    headline ratio; ``RATIO_KEY`` for every scenario compared with channels_redis) on every
    result row; a ratio is None when there is nothing to compare.  The reference is
    :func:`bench.drivers.reference_layer` of the row's scenario."""
    reference = {
        (r["scenario"], r["label"]): r
        for r in rows
        if r.get("type") == "result"
        and r["layer"] == reference_layer(r["scenario"])
        and not r.get("error")
    }
    for row in rows:
        if row.get("type") != "result":
            continue
        ref = reference.get((row["scenario"], row["label"]))
        ratios: dict[str, float | None] = {}
        for metric, higher_better, _ in RATIOS[row["scenario"]]:
            ratios[metric] = None
            if ref is None or row.get("error"):
                continue
            ours, theirs = row["metrics"].get(metric), ref["metrics"].get(metric)
            if _positive(ours) and _positive(theirs):
                ratios[metric] = ours / theirs if higher_better else theirs / ours
        row["ratios"] = ratios
        row[f"x_vs_{reference_layer(row['scenario'])}"] = ratios[PRIMARY[row["scenario"]][0]]


def _spin(spin_us: Any) -> str:
    if spin_us is None:
        return "each layer's default spin budget before sleeping (0 us for ringbuf_raw)"
    return f"spin budget {spin_us} us before sleeping"


def aio_driving_note(settings: dict[str, Any]) -> str | None:
    """How the run drove its Channels 4 layers (None when it measured none): ratios of
    ipc_aio and channels_redis mean little without it, the per-call driving adding
    ~10-15 us of asyncio machinery to every operation."""
    layers = [name for name in settings.get("layers", ()) if name in LAYERS and LAYERS[name].channels4]
    if not layers:
        return None
    names = ", ".join(layers)
    if settings.get("aio_driving") == "per-call":
        return (
            f"Channels 4 layers ({names}): per-call driving (`--aio-driving per-call`): "
            "`loop.run_until_complete()` around every operation, as sync code calls them "
            "(~10-15 us of asyncio machinery per operation)."
        )
    return (
        f"Channels 4 layers ({names}): native asyncio driving (`--aio-driving native`): each "
        "role is one coroutine on its process's event loop, every operation a plain `await` "
        "(a receive past the timeout is cancelled by one watchdog per process, no timer per "
        "receive), as Channels 4 consumers run."
    )


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value) and value > 0


# ---------------------------------------------------------------------- formatting


def fmt_num(value: Any) -> str:
    """3 significant figures, thousands separated; '-' for missing."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.3g}M"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def fmt_ratio(value: Any) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}x"
    if value >= 10:
        return f"{value:.1f}x"
    return f"{value:.2f}x"


def layer_label(layer: str) -> str:
    info = LAYERS.get(layer)
    return f"{layer} (limit)" if info is not None and info.limit else layer


# ---------------------------------------------------------------------- tables

_Column = tuple[str, str]  # (title, metric key)

_COLUMNS: dict[str, list[_Column]] = {
    "pingpong": [
        ("p50 us", "p50_us"),
        ("p90 us", "p90_us"),
        ("p99 us", "p99_us"),
        ("max us", "max_us"),
        ("round trips/s", "rtt_per_s"),
    ],
    "oneway": [("msgs/s", "msgs_per_s"), ("MB/s", "mb_per_s")],
    "mpmc": [("msgs/s", "msgs_per_s"), ("MB/s", "mb_per_s")],
    "group": [("send call us", "send_us"), ("all delivered us", "deliver_us")],
    "wide": [("send call us", "send_us"), ("all delivered us", "deliver_us")],
    "idle": [
        ("receiver CPU %", "cpu_pct"),
        ("redis-server CPU %", "redis_cpu_pct"),
        ("first wake-up us", "wake_us"),
    ],
    "mixed": [
        ("p50 us", "p50_us"),
        ("p99 us", "p99_us"),
        ("p99.9 us", "p99_9_us"),
        ("max us", "max_us"),
        ("sent msgs/s", "send_rate"),
    ],
}

_LABEL_TITLE = {"group": "Size x members", "wide": "Size x channels", "idle": "", "mixed": "Sizes"}


def _sort_key(row: dict[str, Any], label_order: dict[str, int]) -> tuple[int, int]:
    layers = list(LAYERS)
    layer_idx = layers.index(row["layer"]) if row["layer"] in layers else len(layers)
    return label_order.get(row["label"], 0), layer_idx


def scenario_table(scenario: str, rows: list[dict[str, Any]]) -> list[str]:
    columns = _COLUMNS[scenario]
    ratios = RATIOS[scenario]
    label_title = _LABEL_TITLE.get(scenario, "Size")
    head = ["Layer"] + ([label_title] if label_title else [])
    head += [title for title, _ in columns]
    head += [f"x vs {reference_layer(scenario)} ({title})" for _, _, title in ratios]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    label_order: dict[str, int] = {}
    for row in rows:
        label_order.setdefault(row["label"], len(label_order))
    for row in sorted(rows, key=lambda r: _sort_key(r, label_order)):
        cells = [layer_label(row["layer"])] + ([row["label"]] if label_title else [])
        if row.get("error"):
            error = str(row["error"]).replace("|", "/").replace("\n", " ")
            cells += [f"error: {error[:160]}"] + [""] * (len(columns) - 1) + ["n/a"] * len(ratios)
        else:
            cells += [fmt_num(row["metrics"].get(key)) for _, key in columns]
            cells += [fmt_ratio(row.get("ratios", {}).get(metric)) for metric, _, _ in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _notes(scenario: str, rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[str]:
    notes = []
    ok = [r for r in rows if not r.get("error")]
    if scenario in ("pingpong", "oneway", "mpmc"):
        notes.append(
            f"Median of {settings['repeats']} repeats of {settings['duration']:g} s each "
            f"(at most {settings['count']:,} messages), after {settings['warmup']} warm-up "
            f"messages; channel capacity {settings['bytes_budget'] >> 20} MiB / message size "
            f"(at most {settings['capacity']:,}), senders back off when full."
        )
    if scenario == "mpmc" and ok:
        p = ok[0]["params"]
        notes.append(f"{p['producers']} producer processes -> {p['consumers']} consumer processes.")
    if scenario == "group":
        notes.append(
            f"Median of {settings['group_rounds']} rounds after one warm-up round; each send is "
            "made 2 ms after the round's barrier by a sender kept busy meanwhile, with the drainer "
            "asleep in its receive (idle members); 'all delivered' runs from the send call until the "
            "drainer has received every member's copy."
        )
    if scenario == "wide":
        notes.append(
            f"Median of {settings['group_rounds']} rounds after one warm-up round, sent like the "
            "group scenario's; the drainer takes the 100 copies with 100 receive calls, each "
            "listing all 100 channels (one call serving every channel, as an ASGI 1 worker does). "
            "Channels 4 layers are not measured: their receive takes one channel. Ratios compare "
            "with ipc_redis, the ASGI 1 layer on Redis (BLPOP over all the channels' keys)."
        )
    if scenario == "idle":
        notes.append(
            "CPU time of the blocked receiver process (all threads, /proc schedstat) over the "
            f"window ({settings['idle_seconds']:g} s); the Redis server's own CPU over the same "
            "window is shown for Redis layers; then another process sends one message: its "
            "latency is the first wake-up."
        )
    if scenario == "mixed":
        notes.append(
            f"Open-loop sender at {settings['rate']:g} msgs/s for {settings['mixed_seconds']:g} s, "
            "sizes 90% 100 B, 9% 1 KiB, 1% 64 KiB; latency from the send call to the receive's "
            "return (one run, not repeated)."
        )
    if scenario == "mixed":
        for row in ok:
            sent = row["metrics"].get("send_rate", 0)
            if sent < 0.95 * settings["rate"]:
                notes.append(
                    f"{row['layer']}: the sender could not keep the rate ({sent:.0f} msgs/s, up to "
                    f"{row['metrics'].get('max_lag_ms', 0):.0f} ms behind schedule), so its "
                    "latencies include queueing."
                )
    if scenario == "group":
        layers = {r["layer"] for r in ok}
        if REFERENCE_LAYER in layers and "redis_raw" in layers:
            notes.append(
                f"{REFERENCE_LAYER} stores one Redis message per receiving process for "
                "process-specific members and copies it to each member in that process; "
                "redis_raw pushes one copy per member and the drainer pops each with a BLPOP."
            )
    for row in ok:
        for key, what in (("lost", "messages lost"), ("duplicates", "messages delivered twice")):
            count = sum(rep.get(key) or 0 for rep in row.get("repeats", []))
            if count > 0:
                cause = _DUPLICATE_CAUSES.get(row["layer"], "") if key == "duplicates" else ""
                notes.append(f"{row['layer']} {row['label']}: {count:.0f} {what} (over all repeats).{cause}")
    pinning = next((r.get("pinning") for r in rows if r.get("pinning")), None)
    if pinning:
        where = ", ".join(f"{role} -> cpu {cpu}" for role, cpu in pinning.items())
        redis = any(LAYERS[r["layer"]].needs_redis for r in rows if r["layer"] in LAYERS)
        notes.append(f"Pinning: {where}" + ("; redis-server unpinned." if redis else "."))
    elif settings.get("pin") is False:
        notes.append("No CPU pinning (--no-pin).")
    return [f"_{n}_" for n in notes]


#: Known causes of a layer's duplicates, appended to the note that counts them.
_DUPLICATE_CAUSES = {
    "channels_redis": (
        " channels_redis keeps a received message in its channel's in-flight backup until a "
        "background task acknowledges it, and every receive first puts that backup back in "
        "the channel: a competing consumer process can get the message again "
        "(django/channels_redis#163), under either --aio-driving."
    ),
}

#: The figures users compare first (and the project's targets): (title, scenario, label,
#: metric, unit).
_HEADLINE = [
    ("round trip 100 B p50", "pingpong", "100 B", "p50_us", "us"),
    ("one-way 100 B", "oneway", "100 B", "msgs_per_s", "msgs/s"),
    ("group_send 100 members, 100 B (call)", "group", "100 B x 100", "send_us", "us"),
    ("group 100 members, all delivered", "group", "100 B x 100", "deliver_us", "us"),
]


def headline_table(results: list[dict[str, Any]]) -> list[str]:
    """One line per layer: the headline figures, each with its ratio to the reference."""
    index = {(r["scenario"], r["label"], r["layer"]): r for r in results}
    columns = [h for h in _HEADLINE if any((h[1], h[2]) == (r["scenario"], r["label"]) for r in results)]
    layers = [name for name in LAYERS if any(r["layer"] == name for r in results)]
    if not columns or not layers:
        return []
    head = ["Layer"] + [f"{title} ({unit}, x vs {REFERENCE_LAYER})" for title, _, _, _, unit in columns]
    lines = ["", "## Headline", "", "| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    for layer in layers:
        cells = [layer_label(layer)]
        for _, scenario, label, metric, _ in columns:
            row = index.get((scenario, label, layer))
            if row is None:
                cells.append("-")
            elif row.get("error"):
                cells.append("error")
            else:
                ratio = row.get("ratios", {}).get(metric)
                cells.append(f"{fmt_num(row['metrics'].get(metric))} ({fmt_ratio(ratio)})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(
    rows: list[dict[str, Any]],
    machine: dict[str, Any],
    settings: dict[str, Any],
    skipped: dict[str, str],
    plots: Iterable[str] = (),
    redis: str | None = None,
) -> str:
    out = ["# Channel layer benchmark", ""]
    out.append(
        f"{machine['cpu']}, {machine['cores']} cores, {machine['kernel']}, {machine['python']}, "
        f"{machine['date']}" + (f", commit {machine['commit']}" if machine.get("commit") else "")
        + "."
    )
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items() if v)
    out += ["", f"Versions: {versions}."]
    if redis:
        out += ["", f"Redis: {redis}."]
    out += [
        "",
        f"Ratios compare each layer with {REFERENCE_LAYER} at the same scenario and size "
        "(> 1 is better); rows marked (limit) are the raw `_ringbuf` core with msgpack, "
        "the stated limit.",
        "",
        f"Shared-memory layers: {_spin(settings.get('spin_us'))}; segments of "
        f"{LayerSpec.segment_size >> 20} MiB.",
    ]
    if settings.get("aio_wakeup") and "ipc_aio" in settings.get("layers", ()):
        out += ["", f"ipc_aio wake-up: {settings['aio_wakeup']} (`--aio-wakeup {settings['aio_wakeup']}`)."]
    driving = aio_driving_note(settings)
    if driving:
        out += ["", driving]
    if settings.get("quick"):
        out += ["", "Quick run: short repeats, figures are indicative only."]
    results = [r for r in rows if r.get("type") == "result"]
    out += headline_table(results)
    for scenario in PRIMARY:
        srows = [r for r in results if r["scenario"] == scenario]
        if not srows:
            continue
        out += ["", f"## {scenario}: {_TITLES[scenario]}", ""]
        out += scenario_table(scenario, srows)
        notes = _notes(scenario, srows, settings)
        if notes:
            out += [""] + notes
    if skipped:
        out += ["", "## Skipped layers", ""]
        out += [f"- {layer}: {reason}" for layer, reason in skipped.items()]
    plots = list(plots)
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"


def write_jsonl(path: str, records: Iterable[dict[str, Any]]) -> None:
    """One strict JSON object per line (NaN and infinities become null)."""
    with open(path, "w") as fh:
        for record in records:
            fh.write(json.dumps(_clean(record), default=str, allow_nan=False) + "\n")


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
