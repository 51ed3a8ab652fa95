"""``python -m bench`` / ``ipc-bench``: every scenario against every available layer, in one
run, with a private Redis server unless ``--redis-url`` is given.

Progress goes to stderr; the markdown table goes to stdout and ``DIR/results.md``, raw
rows to ``DIR/results.jsonl`` (one JSON object per line: the machine, the settings, the
skipped layers, then one row per case) and figures to ``DIR/*.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import secrets
import sys
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.drivers import AIO_DRIVINGS, AIO_WAKEUPS, LAYERS, REFERENCE_LAYER, LayerSpec
from bench.machine import machine_record
from bench.procs import terminate_as_exit
from bench.redis_server import RedisServer, RedisUnavailable, redis_server_version
from bench.settings import DEFAULT_MEMBERS, DEFAULT_SIZES, SCENARIOS, Settings

__all__ = ["main", "build_parser"]


def _csv(kind: str, choices: tuple[str, ...] | None = None) -> Any:
    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"empty {kind} list")
        if choices is not None:
            bad = [item for item in items if item not in choices]
            if bad:
                raise argparse.ArgumentTypeError(
                    f"unknown {kind} {', '.join(bad)}; choose from {', '.join(choices)}"
                )
        return items

    return parse


def _size(text: str) -> int:
    t = text.strip().lower().replace(" ", "")
    for suffix, mult in (("kib", 1024), ("k", 1024), ("mib", 1 << 20), ("m", 1 << 20), ("b", 1)):
        if t.endswith(suffix):
            t, factor = t[: -len(suffix)], mult
            break
    else:
        factor = 1
    try:
        value = int(float(t) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 100, 1KiB, 64KiB)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return value


def _sizes(text: str) -> list[int]:
    return [_size(item) for item in _csv("size")(text)]


def _ints(text: str) -> list[int]:
    try:
        values = [int(item) for item in _csv("number")(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"numbers must be positive: {text!r}")
    return values


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {kind.__name__}: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    layers = "\n".join(f"  {name:15s} {info.description}" for name, info in LAYERS.items())
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Measure this project's channel layers against Redis in one run: round trip, "
            "throughput, group fan-out, idle cost and latency tail, with tables and plots."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"layers (a layer that cannot be imported or built is skipped, with the reason):\n"
            f"{layers}\n\nscenarios: {', '.join(SCENARIOS)}\n\n"
            "Every ratio column compares with channels_redis at the same scenario and size."
        ),
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short run (under a minute): 2 repeats of 0.1 s, 2 group rounds, 0.5 s idle and mixed windows",
    )
    parser.add_argument(
        "--only", type=_csv("scenario", SCENARIOS), metavar="SCENARIO,...", help="run only these scenarios"
    )
    parser.add_argument(
        "--layers",
        type=_csv("layer", tuple(LAYERS)),
        metavar="LAYER,...",
        default=list(LAYERS),
        help=f"layers to measure (default: all; {REFERENCE_LAYER} is the ratio reference)",
    )
    parser.add_argument("--out", default="bench-results", metavar="DIR", help="output directory (default: %(default)s)")
    parser.add_argument(
        "--redis-url",
        metavar="URL",
        help="use this Redis (e.g. redis://127.0.0.1:6379/0) instead of starting a private redis-server",
    )
    parser.add_argument(
        "--sizes",
        type=_sizes,
        metavar="SIZE,...",
        help=f"message sizes (default: {','.join(str(s) for s in DEFAULT_SIZES)}; 1KiB style accepted)",
    )
    parser.add_argument(
        "--members",
        type=_ints,
        metavar="N,...",
        help=f"group sizes for the group scenario (default: {','.join(map(str, DEFAULT_MEMBERS))})",
    )
    parser.add_argument(
        "--duration",
        type=_positive(float),
        metavar="S",
        help="seconds per repeat (default 1, quick 0.1)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive(int),
        metavar="N",
        help="repeats per case; the median is reported (default 3, quick 2)",
    )
    parser.add_argument("--count", type=_positive(int), metavar="N", help="at most N messages / round trips per repeat")
    parser.add_argument(
        "--rounds",
        type=_positive(int),
        metavar="N",
        help="group sends measured per case (default 20, quick 2)",
    )
    parser.add_argument(
        "--scale",
        type=_positive(float),
        default=1.0,
        metavar="F",
        help="multiply every duration and count by F (e.g. 0.1 for a tiny smoke run)",
    )
    parser.add_argument(
        "--rate",
        type=_positive(float),
        metavar="R",
        help="mixed scenario: messages per second (default 500)",
    )
    parser.add_argument(
        "--idle-seconds",
        type=_positive(float),
        metavar="S",
        help="idle scenario window (default 5, quick 0.5)",
    )
    parser.add_argument(
        "--mixed-seconds",
        type=_positive(float),
        metavar="S",
        help="mixed scenario length (default 6, quick 0.5)",
    )
    parser.add_argument("--producers", type=_positive(int), metavar="N", help="mpmc scenario producers (default 2)")
    parser.add_argument("--consumers", type=_positive(int), metavar="M", help="mpmc scenario consumers (default 2)")
    parser.add_argument(
        "--recv-timeout",
        type=_positive(float),
        metavar="S",
        help="a receive waiting longer is an error (default 10, quick 5)",
    )
    parser.add_argument(
        "--spin-us",
        type=int,
        metavar="US",
        help="spin budget before sleeping of the shared-memory layers (default: the layer's own; 0 for ringbuf_raw)",
    )
    parser.add_argument(
        "--aio-driving",
        choices=AIO_DRIVINGS,
        default=AIO_DRIVINGS[0],
        help=(
            "how the Channels 4 layers (ipc_aio, channels_redis) are driven, the same for both: "
            "'native' (default): each role is one coroutine on its process's event loop and "
            "every layer operation a plain await, as Channels 4 consumers run; 'per-call': "
            "loop.run_until_complete() around every operation, as sync code calls them (adds "
            "~10-15 us of asyncio machinery per operation), for comparison"
        ),
    )
    parser.add_argument(
        "--aio-wakeup",
        choices=AIO_WAKEUPS,
        help=(
            "how ipc_aio's receive is woken: 'fd' (the layer's default: the loop polls an FD "
            "watch the sender pokes) or 'thread' (a helper thread per queue sleeps in the "
            "kernel and wakes the loop, one more thread wake-up), to compare the two"
        ),
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    settings = Settings.preset(args.quick, list(args.layers))
    overrides = {
        "scenarios": args.only,
        "sizes": args.sizes,
        "members": args.members,
        "duration": args.duration,
        "repeats": args.repeats,
        "count": args.count,
        "group_rounds": args.rounds,
        "rate": args.rate,
        "idle_seconds": args.idle_seconds,
        "mixed_seconds": args.mixed_seconds,
        "producers": args.producers,
        "consumers": args.consumers,
        "recv_timeout": args.recv_timeout,
        "spin_us": args.spin_us,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    settings.pin = not args.no_pin
    settings.aio_driving = args.aio_driving
    settings.aio_wakeup = args.aio_wakeup
    return settings.scaled(args.scale)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


class Run:
    """One bench run: probe the layers, run every case, write the outputs."""

    def __init__(self, settings: Settings, out_dir: str, redis_url: str | None, plots: bool):
        self.settings = settings
        self.out_dir = out_dir
        self.redis_url = redis_url
        self.redis_desc: str | None = None
        self.redis_pid: int | None = None
        self.redis_version: str | None = None
        #: The sharded layer's other two servers (private ones, started when it is measured).
        self.shard_urls: tuple[str, ...] = ()
        self.plots = plots
        self.run_id = secrets.token_hex(3)
        self.case_no = 0
        self.skipped: dict[str, str] = {}
        self.rows: list[dict[str, Any]] = []

    def spec(self, layer: str, size: int | None = None) -> LayerSpec:
        """A fresh prefix for every case: no case sees another's queues, keys or segments."""
        self.case_no += 1
        return LayerSpec(
            layer=layer,
            prefix=f"bench{self.run_id}c{self.case_no:05d}",
            redis_url=self.redis_url,
            capacity=self.settings.capacity_for(size),
            spin_us=self.settings.spin_us,
            aio_driving=self.settings.aio_driving,
            aio_wakeup=self.settings.aio_wakeup,
            shard_urls=self.shard_urls,
        )

    # ------------------------------------------------------------------ steps

    def start_redis(self, stack: contextlib.ExitStack) -> None:
        if not any(LAYERS[name].needs_redis for name in self.settings.layers):
            return
        extra = max(LAYERS[name].extra_shards for name in self.settings.layers)
        if extra:
            try:
                shards = [RedisServer().start() for _ in range(extra)]
            except RedisUnavailable as exc:
                _log(f"redis: no servers for the sharded layer: {exc}")
            else:
                for shard in shards:
                    stack.callback(shard.stop)
                self.shard_urls = tuple(shard.url for shard in shards)
                _log(f"redis: started {', '.join(self.shard_urls)} for the sharded layer's other shards")
        if self.redis_url:
            self.redis_desc = f"external server {_hide_password(self.redis_url)}"
            self.redis_version = _external_redis_version(self.redis_url)
            return
        try:
            server = RedisServer().start()
        except RedisUnavailable as exc:
            _log(f"redis: {exc}")
            self.redis_desc = f"not available ({exc})"
            return
        stack.callback(server.stop)
        self.redis_url, self.redis_pid = server.url, server.pid
        self.redis_version = redis_server_version()
        self.redis_desc = (
            f"private redis-server {self.redis_version} on 127.0.0.1:{server.port}, "
            "persistence off (--save '' --appendonly no), unpinned"
        )
        _log(f"redis: started {server.url} (pid {server.pid})")

    def probe_layers(self) -> list[str]:
        from bench.runner import run_probe

        ready = []
        for layer in self.settings.layers:
            info = LAYERS[layer]
            if info.needs_redis and not self.redis_url:
                self.skipped[layer] = "no Redis server (redis-server not installed and no --redis-url)"
            else:
                spec = self.spec(layer)
                result = run_probe(spec, timeout=30.0)
                self._sweep(spec)
                if result["ok"]:
                    ready.append(layer)
                    _log(f"layer {layer}: ok")
                    continue
                kind = "unavailable" if result.get("unavailable") else "probe failed"
                self.skipped[layer] = f"{kind}: {result['error']}"
            _log(f"layer {layer}: SKIPPED ({self.skipped[layer]})")
        return ready

    def run_cases(self, layers: list[str]) -> None:
        from bench import scenarios
        from bench.runner import CaseResult, available_cpus, run_case

        cpus = available_cpus() if self.settings.pin else None
        for scenario in self.settings.scenarios:
            per_layer = {
                layer: scenarios.build_cases(
                    scenario,
                    layer,
                    self.settings,
                    functools.partial(self.spec, layer),
                    cpus,
                    self.redis_pid,
                )
                for layer in layers
            }
            n_cases = max((len(c) for c in per_layer.values()), default=0)
            # Interleave layers case by case, so that each comparison runs close in time.
            for i in range(n_cases):
                for layer in layers:
                    if i >= len(per_layer[layer]):
                        continue  # the scenario has fewer cases for this layer (wide: none for Channels 4)
                    case = per_layer[layer][i]
                    try:
                        result = run_case(case, self.settings.recv_timeout)
                    except Exception as exc:  # a harness bug must not lose the whole run
                        error = f"bench error: {type(exc).__name__}: {exc}"
                        result = CaseResult(False, [], {}, error, 0.0)
                    row = self._row(case, result)
                    cleanup_error = self._sweep(case.spec)
                    if cleanup_error:
                        row["cleanup_error"] = cleanup_error
                    self.rows.append(row)
                    _log(_progress(row))

    def _sweep(self, spec: LayerSpec) -> str | None:
        from bench.drivers import sweep

        try:
            sweep(spec.prefix, self.redis_url, self.shard_urls)
        except Exception as exc:
            _log(f"cleanup of {spec.prefix} failed: {type(exc).__name__}: {exc}")
            return f"{type(exc).__name__}: {exc}"
        return None

    def sweep_run(self) -> None:
        """Remove anything left under this run's prefix (after an interrupted case)."""
        self._sweep(LayerSpec(layer="-", prefix=f"bench{self.run_id}c"))

    def _row(self, case: Any, result: Any) -> dict[str, Any]:
        from bench.scenarios import summarize

        row: dict[str, Any] = {
            "type": "result",
            "scenario": case.scenario,
            "layer": case.layer,
            "label": case.label,
            "params": case.params,
            "limit": LAYERS[case.layer].limit,
            "pinning": {role.name: role.cpu for role in case.roles if role.cpu is not None},
            "driving": case.spec.aio_driving if LAYERS[case.layer].channels4 else "sync",
            "elapsed_s": round(result.elapsed, 3),
            "error": result.error,
            "metrics": {},
            "repeats": [],
        }
        if result.ok:
            try:
                row.update(summarize(case, result.results, result.extra))
            except Exception as exc:  # a summary bug must not lose the whole run
                row["error"] = f"summary failed: {type(exc).__name__}: {exc}"
        return row

    def write(self, machine: dict[str, Any], interrupted: bool) -> str:
        from bench import report

        report.add_ratios(self.rows)
        plots: list[str] = []
        if self.plots:
            try:
                from bench.plots import write_plots

                plots = write_plots(self.rows, self.out_dir)
            except Exception as exc:
                _log(f"plots failed: {type(exc).__name__}: {exc}")
        settings = self.settings.as_record()
        text = report.render_markdown(self.rows, machine, settings, self.skipped, plots, self.redis_desc)
        if interrupted:
            text += "\n_Interrupted: partial results._\n"
        with open(os.path.join(self.out_dir, "results.md"), "w") as fh:
            fh.write(text)
        records: list[dict[str, Any]] = [
            {"type": "machine", **machine},
            {"type": "settings", **settings, "redis": self.redis_desc, "interrupted": interrupted},
        ]
        records += [{"type": "skip", "layer": k, "reason": v} for k, v in self.skipped.items()]
        report.write_jsonl(os.path.join(self.out_dir, "results.jsonl"), records + self.rows)
        return text


def _external_redis_version(url: str) -> str | None:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            return str(client.info("server").get("redis_version"))
        finally:
            client.close()
    except Exception as exc:
        _log(f"redis: cannot query {_hide_password(url)}: {exc}")
        return None


def _progress(row: dict[str, Any]) -> str:
    from bench.report import fmt_num
    from bench.scenarios import PRIMARY

    head = f"{row['scenario']:8s} {row['layer']:14s} {row['label']:14s} {row['elapsed_s']:6.1f} s"
    if row["error"]:
        return f"{head}  ERROR {row['error']}"
    metric, _, title = PRIMARY[row["scenario"]]
    return f"{head}  {title} {fmt_num(row['metrics'].get(metric))}"


def main(argv: list[str] | None = None) -> int:
    """Console entry point (``ipc-bench``); returns the exit status."""
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    os.makedirs(args.out, exist_ok=True)
    run = Run(settings, args.out, args.redis_url, plots=not args.no_plots)
    interrupted = False
    started = time.monotonic()
    with terminate_as_exit(), contextlib.ExitStack() as stack:
        try:
            run.start_redis(stack)
            layers = run.probe_layers()
            if not layers:
                _log("no layer available: nothing to measure")
            run.run_cases(layers)
        except KeyboardInterrupt:
            interrupted = True
            _log("interrupted: writing partial results")
        finally:
            run.sweep_run()
        machine = machine_record(run.redis_version)
        text = run.write(machine, interrupted)
    print(text, end="")
    errors = sum(1 for r in run.rows if r.get("error"))
    _log(
        f"done in {time.monotonic() - started:.0f} s: {len(run.rows)} rows, {errors} errors, "
        f"{len(run.skipped)} layers skipped; wrote {os.path.join(args.out, 'results.md')}"
    )
    if interrupted:
        return 130
    return 0 if any(not r.get("error") for r in run.rows) else 1
