"""The ``ipc-layer`` command, run as a subprocess against real segments.

The command is started as ``python -m ipc_layer.cli`` from the repository
root, which is what the ``ipc-layer`` console script (declared in
setup.py) runs.
"""
from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ipc_layer import IPCChannelLayer
from tests.support import make_layer, remove_segment, unique_prefix

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[3]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ipc_layer.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def busy_layer() -> Iterator[IPCChannelLayer]:
    prefix = unique_prefix()
    layer = make_layer(prefix, capacity=3, channel_capacity={"http.request": 50})
    for n in range(4):
        layer.send("http.request", {"n": n})
    layer.send("daphne.response.abc!c1", {"status": 200})
    layer.send("daphne.response.abc!c2", {"status": 200})
    for _ in range(4):
        try:
            layer.send("small", {})
        except layer.ChannelFull:
            pass
    layer.group_add("chat", "daphne.response.abc!c1")
    layer.group_add("chat", "daphne.response.abc!c2")
    layer.group_add("solo", "small")
    try:
        yield layer
    finally:
        layer.close()
        remove_segment(prefix)


def test_console_script_is_declared() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = [node.value for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and "=" in node.value]
    assert "ipc-layer = ipc_layer.cli:main" in scripts


@pytest.mark.parametrize("args", [(), ("ls",), ("stats",), ("top",), ("rm",)])
def test_help_everywhere(args: tuple[str, ...]) -> None:
    result = run(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: ipc-layer" in result.stdout
    if args and args[0] != "ls":
        assert "--prefix" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    result = run()
    assert result.returncode == 2
    assert "usage: ipc-layer" in result.stderr


def test_ls_lists_the_segment(busy_layer: IPCChannelLayer) -> None:
    result = run("ls")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(busy_layer.prefix + " "))
    assert "16.0 MiB" in line
    assert "%" in line
    assert str(__import__("os").getpid()) in line  # attached: this test process
    listed = json.loads(run("ls", "--json").stdout)
    row = next(r for r in listed if r["prefix"] == busy_layer.prefix)
    assert row["queues"] == 3 and row["sets"] == 2 and row["attached"] is True


def test_stats(busy_layer: IPCChannelLayer) -> None:
    result = run("stats", "--prefix", busy_layer.prefix)
    assert result.returncode == 0, result.stderr
    # CHANNEL PENDING OLDEST(s) SENT FULL CAPACITY WAITING, the age left out.
    rows = [line.split() for line in result.stdout.splitlines() if line]
    cols = [row[:2] + row[3:] for row in rows if len(row) == 7]
    assert ["http.request", "4", "4", "0", "50", "0"] in cols
    assert ["daphne.response.abc!", "2", "2", "0", "3", "0"] in cols
    assert ["small", "3", "3", "1", "3", "0"] in cols
    lines = result.stdout.splitlines()
    assert any(line.split() == ["chat", "2"] for line in lines)
    assert any(line.split() == ["solo", "1"] for line in lines)
    snapshot = json.loads(run("stats", "--prefix", busy_layer.prefix, "--json").stdout)
    by_name = {row["channel"]: row for row in snapshot["channels"]}
    assert by_name["small"] == {"channel": "small", "pending": 3, "oldest_age_s": by_name["small"]["oldest_age_s"],
                                "sent": 3, "full": 1, "capacity": 3, "waiters": 0}
    assert {g["group"]: g["members"] for g in snapshot["groups"]} == {"chat": 2, "solo": 1}


def test_top_refreshes(busy_layer: IPCChannelLayer) -> None:
    result = run("top", "--prefix", busy_layer.prefix, "--interval", "0.2", "--iterations", "3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ipc-layer top") == 3
    assert result.stdout.count("http.request") == 3
    assert "MSG/S" in result.stdout
    assert "\x1b[2J" not in result.stdout  # not a terminal: no clearing
    cleared = run("top", "--prefix", busy_layer.prefix, "--interval", "0.1", "--iterations", "2", "--clear")
    assert cleared.stdout.count("\x1b[H\x1b[2J") == 2


def test_top_shows_rates(busy_layer: IPCChannelLayer) -> None:
    busy_layer.send("rated", {"n": -1})
    proc = subprocess.Popen([sys.executable, "-m", "ipc_layer.cli", "top", "--prefix", busy_layer.prefix,
                             "--interval", "1", "--iterations", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the first frame is out: traffic now falls between frames
            if line.startswith("rated "):
                break
        peer = make_layer(busy_layer.prefix, capacity=1000)
        for n in range(200):
            peer.send("rated", {"n": n})
        peer.close()
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err
    row = next(line.split() for line in out.splitlines() if line.startswith("rated "))
    assert row[1] == "201"
    assert 100 <= float(row[-1]) <= 300  # 200 messages over the ~1 s between frames


@pytest.mark.parametrize("command", ["stats", "top", "rm"])
def test_missing_segment_exits_2_naming_the_prefix(command: str) -> None:
    prefix = unique_prefix()
    result = run(command, "--prefix", prefix)
    assert result.returncode == 2
    assert repr(prefix) in result.stderr
    assert result.stderr.startswith(f"ipc-layer {command}: error:")


def test_bad_prefix_exits_2() -> None:
    result = run("stats", "--prefix", "../etc")
    assert result.returncode == 2
    assert "'../etc'" in result.stderr


def test_bad_option_values_exit_2() -> None:
    assert run("top", "--prefix", "x", "--interval", "0").returncode == 2
    assert run("top", "--prefix", "x", "--iterations", "-1").returncode == 2


def test_rm_refuses_while_attached_then_forces(busy_layer: IPCChannelLayer) -> None:
    path = pathlib.Path(f"/dev/shm/rbuf.{busy_layer.prefix}")
    refused = run("rm", "--prefix", busy_layer.prefix)
    assert refused.returncode == 2
    assert repr(busy_layer.prefix) in refused.stderr and "--force" in refused.stderr
    assert path.exists()
    forced = run("rm", "--prefix", busy_layer.prefix, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not path.exists()
    # The attached layer keeps its mapping.
    busy_layer.send("after.rm", {"still": "mapped"})
    assert busy_layer.receive(["after.rm"]) == ("after.rm", {"still": "mapped"})


def test_rm_when_detached(busy_layer: IPCChannelLayer) -> None:
    prefix = unique_prefix()
    layer = make_layer(prefix)
    layer.close()
    try:
        result = run("rm", "--prefix", prefix)
        assert result.returncode == 0, result.stderr
        assert not pathlib.Path(f"/dev/shm/rbuf.{prefix}").exists()
    finally:
        remove_segment(prefix)


@pytest.mark.parametrize("interval", ["inf", "nan", "1e-9", "0.05", "3601", "0"])
def test_top_interval_out_of_bounds_is_a_usage_error(interval: str) -> None:
    """``-i inf`` ended in a traceback from time.sleep (rc 1) and ``-i 1e-9`` busy-looped."""
    prefix = unique_prefix()  # never created: the interval is refused before any attach
    result = run("top", "--prefix", prefix, "-i", interval, "-n", "2")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ipc-layer top: error: argument --interval/-i: must be a number of seconds in 0.1..3600, "
        f"got {interval!r}"
    )
