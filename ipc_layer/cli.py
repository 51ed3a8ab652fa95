"""The ``ipc-layer`` command: inspect and remove the layer's shared-memory segments.

::

    ipc-layer ls                          segments on this host
    ipc-layer stats --prefix P [--json]   per channel and group of one segment
    ipc-layer top --prefix P              the same, redrawn every --interval s
    ipc-layer rm --prefix P [--force]     unlink (refused while attached)

Every sub-command has ``--help``. Errors print one line naming the prefix
to stderr and exit with status 2 (argparse's usage errors do the same).

Reading a segment attaches to it briefly (never creates one); ``stats``
and ``top`` only read, except that looking at a group drops its expired
members, as any reader would. Since they only read, any file mode is
accepted, but only segments owned by this uid (or a ``--trust-uid``) are
opened. A segment whose lock a live process keeps (stopped by SIGSTOP or
Ctrl-Z, held by a debugger) is reported as "locked by pid N (stopped)"
after ``--lock-timeout`` seconds (default 1) instead of hanging.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import pwd
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import _ringbuf
from _ringbuf import LockTimeout, RingBufError, Segment, SegmentBusy, SegmentNotFound
from _ringbuf.binding import SEGMENT_FILE_PREFIX, SHM_DIR

from .hybrid_facts import hybrid_report, is_fact
from .layer import validate_prefix

__all__ = ["collect", "main", "render_hybrid", "render_ls", "render_stats"]

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 2
_NS = 1_000_000_000
_CLEAR = "\x1b[H\x1b[2J"
#: Seconds a read waits for a segment's lock before reporting who holds it.
DEFAULT_LOCK_TIMEOUT = 1.0
#: ``top --interval`` bounds: below, a busy loop; above, nobody is watching.
INTERVAL_MIN = 0.1
INTERVAL_MAX = 3600.0


class CommandError(Exception):
    """A failure to report as one line and exit status 2."""


class SegmentLocked(CommandError):
    """The segment's lock stayed held by a live process past ``--lock-timeout``."""

    def __init__(self, prefix: str, exc: LockTimeout) -> None:
        super().__init__(f"segment {prefix!r} is {locked_text(exc.pid, exc.state)}: {exc}")
        self.pid = exc.pid
        self.state = exc.state


def locked_text(pid: int, state: str) -> str:
    """``locked by pid N (stopped)``: how a held lock is reported everywhere."""
    return f"locked by pid {pid} ({state})" if pid else f"locked by an unknown process ({state})"


# -- data -----------------------------------------------------------------------------


def _owner(uid: object) -> str:
    if not isinstance(uid, int):
        return "?"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def attached_pids(path: str) -> list[int]:
    """Processes that map ``path`` (from /proc/<pid>/maps; unreadable ones are skipped)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/maps", encoding="utf-8", errors="replace") as maps:
                if any(line.rstrip("\n").endswith(path) or f"{path} (deleted)" in line for line in maps):
                    pids.append(int(entry))
        except OSError:
            continue
    return sorted(pids)


def _open(prefix: str, trusted_uids: Sequence[int] = (),
          lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> Segment:
    try:
        validate_prefix(prefix)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    try:
        # Only reading: any mode will do; the owner must still be trusted.
        return Segment(prefix, create=False, mode=0o777, trusted_uids=trusted_uids,
                       lock_timeout=lock_timeout)
    except SegmentNotFound:
        raise CommandError(f"no segment for prefix {prefix!r} on this host (see `ipc-layer ls`)") from None
    except (RingBufError, OSError) as exc:
        raise CommandError(f"cannot open the segment for prefix {prefix!r}: {exc}") from None


def collect(prefix: str, trusted_uids: Sequence[int] = (),
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> dict[str, Any]:
    """A snapshot of one segment: totals, every queue's counters, every group's size.

    :raises SegmentLocked: a live process kept the lock ``lock_timeout`` seconds.
    """
    seg = _open(prefix, trusted_uids, lock_timeout)
    try:
        info = seg.info()
        channels: list[dict[str, Any]] = []
        for name in seg.list_queues():
            stats = seg.queue_stats(name)
            channels.append({
                "channel": name.decode("ascii", "replace"),
                "pending": stats["pending"],
                "oldest_age_s": round(stats["oldest_age_ns"] / _NS, 3),
                "sent": stats["sent"],
                "full": stats["full"],
                "capacity": stats["capacity"],
                "waiters": stats["waiters"],
            })
        groups: list[dict[str, Any]] = []
        for name in seg.list_sets():
            if not is_fact(name):
                groups.append({"group": name.decode("ascii", "replace"), "members": len(seg.set_members(name))})
        hybrid = hybrid_report(seg, channels)
    except LockTimeout as exc:
        raise SegmentLocked(prefix, exc) from None
    except RingBufError as exc:
        raise CommandError(f"reading the segment for prefix {prefix!r}: {exc}") from None
    finally:
        seg.close()
    channels.sort(key=lambda row: (-row["pending"], row["channel"]))
    groups.sort(key=lambda row: (-row["members"], row["group"]))
    snapshot = {"prefix": prefix, "time": time.time(), "info": info, "channels": channels, "groups": groups}
    if hybrid is not None:
        snapshot["hybrid"] = hybrid
    return snapshot


# -- rendering ---------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> list[str]:
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        parts = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        out.append("  ".join(parts).rstrip())
    return out


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def _use(row: dict[str, Any]) -> str:
    total = row.get("cells_total") or 0
    if not total:
        return "?"
    return f"{100 * (total - row['cells_free']) / total:.1f}%"


def render_ls(segments: Sequence[dict[str, Any]]) -> list[str]:
    if not segments:
        return ["no segments on this host"]
    rows = []
    for seg in segments:
        if "locked_by" in seg:
            holder = seg["locked_by"]
            rows.append([seg["prefix"], _size(seg.get("file_size", 0)), "?", _owner(seg.get("owner_uid")),
                         "?", "-", "-", locked_text(holder["pid"], holder["state"])])
            continue
        if "error" in seg:
            rows.append([seg["prefix"], _size(seg.get("file_size", 0)), "?", _owner(seg.get("owner_uid")),
                         "?", "-", "-", f"unreadable: {seg['error']}"])
            continue
        pids = seg.get("pids")
        attached = ("yes" if seg.get("attached") else "no") if pids is None else (
            ",".join(map(str, pids)) if pids else ("yes" if seg.get("attached") else "no"))
        rows.append([seg["prefix"], _size(seg["size"]), _use(seg), _owner(seg.get("owner_uid")), attached,
                     seg["queues"], seg["sets"], f"{seg['sent']} sent, {seg['full']} full"])
    return _table(["PREFIX", "SIZE", "USE", "OWNER", "ATTACHED", "QUEUES", "GROUPS", "TOTALS"], rows,
                  right={1, 2, 5, 6})


def render_stats(snapshot: dict[str, Any], rates: dict[str, float] | None = None,
                 max_rows: int | None = None) -> list[str]:
    """Lines for ``stats`` and one ``top`` frame; ``rates`` adds a msg/s column per channel."""
    info = snapshot["info"]
    lines = [
        f"segment {snapshot['prefix']!r}: {_size(info['size'])}, {_use(info)} used, "
        f"{info['queues']} queues, {info['sets']} groups, {info['members']} memberships, "
        f"{info['waiters_used']}/{info['waiters_total']} receivers blocked",
        f"totals: {info['sent']} sent, {info['received']} received, {info['full']} full, "
        f"{info['expired']} expired, {info['repairs']} crash repairs",
        "",
    ]
    channels = snapshot["channels"]
    shown = channels if max_rows is None else channels[:max_rows]
    headers = ["CHANNEL", "PENDING", "OLDEST(s)", "SENT", "FULL", "CAPACITY", "WAITING"]
    rows: list[list[object]] = []
    for ch in shown:
        row: list[object] = [ch["channel"], ch["pending"], f"{ch['oldest_age_s']:.1f}", ch["sent"], ch["full"],
                             ch["capacity"] or "-", ch["waiters"]]
        if rates is not None:
            row.append(f"{rates.get(ch['channel'], 0.0):.0f}")
        rows.append(row)
    if rates is not None:
        headers.append("MSG/S")
    if channels:
        lines += _table(headers, rows, right=set(range(1, len(headers))))
        if len(shown) < len(channels):
            lines.append(f"... {len(channels) - len(shown)} more channels")
    else:
        lines.append("no channels")
    lines.append("")
    groups = snapshot["groups"]
    if groups:
        lines += _table(["GROUP", "MEMBERS"], [[g["group"], g["members"]] for g in groups], right={1})
    else:
        lines.append("no groups")
    hybrid = snapshot.get("hybrid")
    if hybrid is not None:
        lines += ["", *render_hybrid(hybrid)]
    return lines


def render_hybrid(hybrid: dict[str, Any]) -> list[str]:
    """The hybrid layer's facts of a segment (``ipc_layer.hybrid_facts``), misconfigurations first."""
    lines = [f"hybrid layer: host {', '.join(map(repr, hybrid['hosts']))}; forwarder: "
             + (", ".join(hybrid["forwarders"]) if hybrid["forwarders"] else
                "NONE (no process of this host receives: messages from other hosts wait in Redis)")]
    for channel in hybrid["unconsumed"]:
        lines.append(f"WARNING: local channel {channel!r} holds messages and nobody consumes it on this "
                     "host: drop it from local_channels or run its consumers here")
    if hybrid["consumers"]:
        lines.append(f"local channels consumed here: {', '.join(hybrid['consumers'])}")
    return lines


# -- commands ------------------------------------------------------------------------------


def cmd_ls(args: argparse.Namespace, out: TextIO) -> int:
    segments = _ringbuf.list_segments(trusted_uids=args.trust_uid, lock_timeout=args.lock_timeout)
    for seg in segments:
        if "error" not in seg:
            seg["pids"] = attached_pids(str(seg["path"])) if seg.get("attached") else []
    if args.json:
        json.dump(segments, out, indent=2, default=str)
        out.write("\n")
    else:
        out.write("\n".join(render_ls(segments)) + "\n")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    snapshot = collect(args.prefix, args.trust_uid, args.lock_timeout)
    if args.json:
        json.dump(snapshot, out, indent=2)
        out.write("\n")
    else:
        out.write("\n".join(render_stats(snapshot)) + "\n")
    return EXIT_OK


def cmd_top(args: argparse.Namespace, out: TextIO) -> int:
    clear = args.clear if args.clear is not None else out.isatty()
    previous: dict[str, Any] | None = None
    iteration = 0
    try:
        while True:
            try:
                snapshot = collect(args.prefix, args.trust_uid, args.lock_timeout)
            except SegmentLocked as exc:
                # Not fatal for a live view: say who holds it, look again.
                stamp = time.strftime("%H:%M:%S")
                out.write((_CLEAR if clear else "") + f"ipc-layer top - {stamp} - segment "
                          f"{args.prefix!r} is {locked_text(exc.pid, exc.state)}; retrying every "
                          f"{args.interval:g}s (Ctrl-C to quit)\n" + ("" if clear else "\n"))
                out.flush()
                iteration += 1
                if args.iterations and iteration >= args.iterations:
                    return EXIT_ERROR
                time.sleep(args.interval)
                continue
            rates: dict[str, float] = {}
            if previous is not None:
                elapsed = max(snapshot["time"] - previous["time"], 1e-6)
                before = {ch["channel"]: ch["sent"] for ch in previous["channels"]}
                for ch in snapshot["channels"]:
                    rates[ch["channel"]] = max(0, ch["sent"] - before.get(ch["channel"], ch["sent"])) / elapsed
            rows = max(5, shutil.get_terminal_size((100, 40)).lines - 12) if clear else None
            frame = render_stats(snapshot, rates, max_rows=rows)
            stamp = time.strftime("%H:%M:%S")
            header = f"ipc-layer top - {stamp} - every {args.interval:g}s (Ctrl-C to quit)"
            out.write((_CLEAR if clear else "") + header + "\n" + "\n".join(frame) + "\n")
            if not clear:
                out.write("\n")
            out.flush()
            previous = snapshot
            iteration += 1
            if args.iterations and iteration >= args.iterations:
                return EXIT_OK
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_rm(args: argparse.Namespace, out: TextIO) -> int:
    prefix = args.prefix
    try:
        validate_prefix(prefix)
    except (TypeError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    try:
        _ringbuf.unlink(prefix, args.force)
    except SegmentNotFound:
        raise CommandError(f"no segment for prefix {prefix!r} on this host") from None
    except SegmentBusy:
        pids = attached_pids(os.path.join(SHM_DIR, SEGMENT_FILE_PREFIX + prefix))
        who = f" (pids {', '.join(map(str, pids))})" if pids else ""
        raise CommandError(
            f"segment for prefix {prefix!r} is attached by running processes{who}; stop them, "
            "or pass --force to unlink it anyway (they keep their mapping, new processes get a fresh segment)"
        ) from None
    except (RingBufError, OSError) as exc:
        raise CommandError(f"cannot remove the segment for prefix {prefix!r}: {exc}") from None
    # The hybrid layer's forwarder lock files (ipc_layer.hybrid): nobody uses them once
    # the segment is gone (a process still attached keeps its open one).
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(SEGMENT_FILE_PREFIX + prefix) + "~fwd~*")):
        try:
            os.unlink(path)
        except OSError:
            pass
    out.write(f"removed segment {prefix!r}\n")
    return EXIT_OK


# -- parsing ----------------------------------------------------------------------------------


def _seconds(low: float, high: float) -> Any:
    """An argparse type: a number of seconds in [low, high] (no inf, no nan)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # also refuses nan
            raise argparse.ArgumentTypeError(f"must be a number of seconds in {low:g}..{high:g}, got {text!r}")
        return value

    return parse


def _uid(text: str) -> int:
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        pass
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None
    if not 0 <= value < 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"not a uid: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipc-layer",
        description="Inspect and remove the shared-memory segments of the IPC channel layer.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    ls = sub.add_parser("ls", help="list the segments on this host",
                        description="List every segment on this host: prefix, size, use, owner, "
                                    "attached processes, queues, groups and totals.")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=cmd_ls)

    def add_reading(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lock-timeout", type=_seconds(0.001, 3600.0), default=DEFAULT_LOCK_TIMEOUT,
                       metavar="SECONDS",
                       help="how long to wait for a segment's lock before reporting the process "
                            f"that holds it (default {DEFAULT_LOCK_TIMEOUT:g})")
        p.add_argument("--trust-uid", type=_uid, action="append", default=[], metavar="USER",
                       help="also read segments owned by this user (name or uid; repeatable); "
                            "by default only this uid's are opened")

    add_reading(ls)

    def add_prefix(p: argparse.ArgumentParser) -> None:
        p.add_argument("--prefix", "-p", required=True, help="the segment prefix (the layer's prefix option)")

    stats = sub.add_parser("stats", help="per-channel and per-group statistics of one segment",
                           description="Per channel: pending messages, oldest age, sent, full count, "
                                       "capacity and blocked receivers; groups and their sizes.")
    add_prefix(stats)
    add_reading(stats)
    stats.add_argument("--json", action="store_true", help="print JSON instead of tables")
    stats.set_defaults(func=cmd_stats)

    top = sub.add_parser("top", help="stats, refreshed live like top",
                         description="Redraw the statistics of one segment every --interval seconds, "
                                     "with a msg/s column per channel. Ctrl-C quits.")
    add_prefix(top)
    add_reading(top)
    top.add_argument("--interval", "-i", type=_seconds(INTERVAL_MIN, INTERVAL_MAX), default=1.0,
                     help=f"seconds between refreshes, {INTERVAL_MIN:g}..{INTERVAL_MAX:g} (default 1)")
    top.add_argument("--iterations", "-n", type=_non_negative_int, default=0,
                     help="stop after N refreshes (default 0: until Ctrl-C)")
    top.add_argument("--clear", dest="clear", action="store_true", default=None,
                     help="clear the screen between frames (default: when stdout is a terminal)")
    top.add_argument("--no-clear", dest="clear", action="store_false", help="print frames one after another")
    top.set_defaults(func=cmd_top)

    rm = sub.add_parser("rm", help="remove a segment",
                        description="Unlink the segment of a prefix. Refused while processes are "
                                    "attached, unless --force.")
    add_prefix(rm)
    rm.add_argument("--force", "-f", action="store_true",
                    help="unlink even while processes are attached (they keep their mapping)")
    rm.set_defaults(func=cmd_rm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(name)s: %(levelname)s: %(message)s")
    try:
        return int(args.func(args, sys.stdout))
    except CommandError as exc:
        print(f"ipc-layer {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # `ipc-layer ls | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
