"""``python -m bench stack``'s report: the markdown table, the goal ratios and the PNG plot.

A row (one per stack, :func:`bench.stack.median_row`) holds seconds and
counts: ``rps``, ``p50``/``p99`` under load, ``p50_1``/``p99_1`` with one
connection, ``cpu_per_request`` (CPU seconds of every process of the
stack / requests), ``cores`` (the CPU seconds per wall second the stack
used under load), ``processes``, ``errors``. The goals of issue 13 are
ratios of the ``ipc`` row to the reference rows of the same run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bench.machine import machine_record
from bench.wrk import fmt_us

__all__ = ["GOALS", "goal_lines", "render", "settings_record", "write_plot"]

#: The packages whose versions the report gives.
PACKAGES = ("Django", "gunicorn", "daphne", "uvicorn", "h11", "httptools", "uvloop", "Twisted", "msgpack")

#: (title, ours, reference, figure, goal, higher is better): issue 13's goals.
GOALS = (
    ("req/s >= 3x Daphne 4's", "ipc", "daphne", "rps", 3.0, True),
    ("p99 under load <= 2x gunicorn's", "ipc", "gunicorn", "p99", 2.0, False),
)


def settings_record(args: argparse.Namespace, stack_cpus: set[int], load_cpus: set[int],
                    load_before: tuple[float, float, float]) -> dict[str, Any]:
    """What the run did, for the report's header (the load averages: other work on the machine)."""
    pinning = ("unpinned (the scheduler places the stacks and wrk)" if args.no_pin else
               f"every process of a stack on CPU {','.join(map(str, sorted(stack_cpus)))}, "
               f"wrk on CPU {','.join(map(str, sorted(load_cpus)))}")
    return {"workers": args.workers, "duration": args.duration, "connections": args.connections,
            "repeats": args.repeats, "pinning": pinning, "load_before": load_before,
            "load_after": os.getloadavg()}


def _ratio(rows: dict[str, dict[str, Any]], ours: str, ref: str, figure: str) -> float | None:
    if ours not in rows or ref not in rows or not rows[ref][figure]:
        return None
    return float(rows[ours][figure] / rows[ref][figure])


def goal_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per goal: the ratio measured in this run and whether it is met."""
    by_name = {row["stack"]: row for row in rows}
    lines = []
    for title, ours, ref, figure, goal, higher in GOALS:
        ratio = _ratio(by_name, ours, ref, figure)
        if ratio is None:
            lines.append(f"- {title}: not measured (needs the {ours} and {ref} rows)")
            continue
        met = ratio >= goal if higher else ratio <= goal
        lines.append(f"- {title}: {ratio:.2f}x -> {'met' if met else 'NOT met'}")
    gunicorn = _ratio(by_name, "ipc", "gunicorn", "rps")
    if gunicorn is not None:
        lines.append(f"- on the way to gunicorn's req/s: {gunicorn:.2f}x")
    # What the load of other programs moves least: the CPU each stack spends on a request.
    cpu = [f"{ratio:.2f}x {ref}'s" for ref in ("gunicorn", "daphne", "uvicorn")
           if (ratio := _ratio(by_name, "ipc", ref, "cpu_per_request")) is not None]
    if cpu:
        lines.append(f"- CPU per request: {', '.join(cpu)}")
    return lines


def _table(rows: list[dict[str, Any]]) -> list[str]:
    by_name = {row["stack"]: row for row in rows}
    lines = ["| stack | processes | req/s | vs daphne | vs gunicorn | p50 | p99 | p99 vs gunicorn | "
             "p50 (1 conn) | p99 (1 conn) | CPU / request | cores busy | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        def ratio(ref: str, figure: str, name: str = row["stack"]) -> str:
            value = _ratio(by_name, name, ref, figure)
            return "-" if value is None else f"{value:.2f}x"

        lines.append(
            f"| {row['stack']}: {row['what']} | {row['processes']} | {row['rps']:,.0f} | {ratio('daphne', 'rps')} | "
            f"{ratio('gunicorn', 'rps')} | {fmt_us(row['p50'])} | {fmt_us(row['p99'])} | "
            f"{ratio('gunicorn', 'p99')} | {fmt_us(row['p50_1'])} | {fmt_us(row['p99_1'])} | "
            f"{fmt_us(row['cpu_per_request'])} | {row['cores']:.2f} | {row['errors']:.0f} |")
    return lines


def render(rows: list[dict[str, Any]], failures: dict[str, str], settings: dict[str, Any],
           profile: dict[str, Any] | None, plot: str | None, interrupted: bool) -> str:
    machine = machine_record(None, PACKAGES)
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    before, after = (", ".join(f"{x:.2f}" for x in settings[key]) for key in ("load_before", "load_after"))
    out = ["# python -m bench stack", "",
           f"{machine['date']}, {machine['cpu']}, {machine['cores']} cores, {machine['kernel']}, "
           f"{machine['python']}" + (f", commit {machine['commit']}" if machine.get("commit") else "") + ".",
           "", f"Versions: {versions}.", "",
           f"{settings['workers']} workers where the stack has workers; wrk runs of {settings['duration']} s, "
           f"{settings['connections']} connections under load, one for the 1-conn latency; "
           f"{settings['repeats']} repeat(s), median of each figure; {settings['pinning']}; "
           f"load average (1, 5, 15 min) {before} before the run, {after} after.",
           "", "The hello-world Django view (`bench/stack_site`), DEBUG off, no database. CPU / request: "
           "utime + stime of every process of the stack (/proc) over the loaded run, divided by its "
           "requests; cores busy: the same CPU time per second.", ""]
    out += _table(rows)
    out += ["", "Goals (issue 13), ratios in this run:", ""] + goal_lines(rows)
    if failures:
        out += ["", "Failed stacks:", ""]
        out += [f"- {name}: {text.strip().splitlines()[0] if text.strip() else 'error'}"
                for name, text in failures.items()]
    if profile is not None:
        from bench.stack_profile import render_profile

        out += ["", *render_profile(profile)]
    if plot:
        out += ["", f"![python -m bench stack]({plot})"]
    if interrupted:
        out += ["", "_Interrupted: partial results._"]
    return "\n".join(out) + "\n"


def write_plot(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """req/s, p50/p99 under load and CPU per request, one panel each; None when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.plots import grouped_bars

    names = [row["stack"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5))
    axes[0].bar(names, [row["rps"] for row in rows], color="#1b9e77")
    axes[0].set_title("requests per second (higher is better)")
    grouped_bars(axes[1], names, [("p50", [row["p50"] * 1e3 for row in rows], "#67a9cf"),
                                  ("p99", [row["p99"] * 1e3 for row in rows], "#b2182b")])
    axes[1].set_title("latency under load, ms (lower is better)")
    axes[1].legend(fontsize=8)
    axes[2].bar(names, [row["cpu_per_request"] * 1e6 for row in rows], color="#7570b3")
    axes[2].set_title("CPU per request, us (lower is better)")
    for ax in axes:
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Hello-world Django view: this stack vs gunicorn, Daphne 4, uvicorn")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
