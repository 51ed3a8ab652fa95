"""Shared fixtures of the whole test suite.

Only the standard library, pytest, ``tests.support`` (prefixes and cleanup)
and ``_ringbuf`` (lazily, inside fixtures) are imported here, so that any
sub-tree of ``tests/`` runs even while another part of the project
(``ipc_layer``, ``server``, ``worker``) is unfinished.

- ``prefix``: a segment prefix unique to one test (``tests.support.unique_prefix``:
  ``t<pid>_<n>_<hex>``); every ``/dev/shm/rbuf.<prefix>*`` file is removed
  afterwards, pass or fail (``tests.support.remove_segment``).
- ``segment``: an 8 MiB :class:`_ringbuf.Segment` on that prefix, closed at
  teardown.
- ``--kills N``: how many SIGKILLs the kill-loop test deals (bounded default
  so CI stays fast; ``--kills 1000`` for the long run).
- ``report_line``: lets a test print a line in the terminal summary (the
  kill loop reports its kills, repairs and losses there, even under ``-q``).
- At the end of the session, segment files this run left behind in
  ``/dev/shm`` fail the run; stale ones of dead earlier runs are listed.
"""
from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Iterator

import pytest

from tests.support import PREFIX_PATTERN, SHM_DIR, remove_segment, unique_prefix

DEFAULT_KILLS = 30

_SESSION_PID = os.getpid()
_REPORT_KEY = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ringbuf")
    group.addoption(
        "--kills",
        type=int,
        default=DEFAULT_KILLS,
        metavar="N",
        help=f"SIGKILLs dealt by the kill-loop test (default {DEFAULT_KILLS}; e.g. 1000 for a long run)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORT_KEY] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give kill-loop tests a timeout that grows with --kills (the default one is for 30)."""
    kills = max(1, int(config.getoption("--kills")))
    for item in items:
        if item.get_closest_marker("killloop") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(180 + kills))


@pytest.fixture
def prefix() -> Iterator[str]:
    """A segment prefix no other test (or concurrent test run) uses, removed afterwards."""
    name = unique_prefix()
    try:
        yield name
    finally:
        remove_segment(name)


@pytest.fixture
def layer_prefix(prefix: str) -> str:
    """The ``prefix`` fixture under the name the layer tests use."""
    return prefix


@pytest.fixture
def segment(prefix: str) -> Iterator[object]:
    """An 8 MiB segment on the test's own prefix, closed (and removed) afterwards."""
    import _ringbuf

    seg = _ringbuf.Segment(prefix, size=8 << 20)
    try:
        yield seg
    finally:
        seg.close()


@pytest.fixture
def kills(request: pytest.FixtureRequest) -> int:
    """The ``--kills`` option."""
    value = int(request.config.getoption("--kills"))
    if value < 1:
        raise pytest.UsageError(f"--kills must be >= 1, got {value}")
    return value


@pytest.fixture
def report_line(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Add a line to the terminal summary (shown even with -q and captured output)."""
    lines = request.config.stash[_REPORT_KEY]

    def add(line: str) -> None:
        lines.append(f"{request.node.nodeid}: {line}")

    return add


# -- leftover check ---------------------------------------------------------------

_OURS = re.compile(r"^rbuf\." + PREFIX_PATTERN.pattern)


def _leftovers() -> tuple[list[str], list[str]]:
    """(files of this session, files of test runs whose process is gone)."""
    mine, stale = [], []
    for path in sorted(glob.glob(os.path.join(SHM_DIR, "rbuf.t*"))):
        m = _OURS.match(os.path.basename(path))
        if not m:
            continue
        pid = int(m.group(1))
        if pid == _SESSION_PID:
            mine.append(path)
        elif not os.path.exists(f"/proc/{pid}"):
            stale.append(path)
    return mine, stale


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.getpid() != _SESSION_PID:  # a forked child that returned into pytest: not ours
        return
    mine, stale = _leftovers()
    session.config.stash[_REPORT_KEY].extend(
        [f"LEFTOVER segment file of this run (fails the run): {p}" for p in mine]
        + [f"stale segment file of a dead earlier run: {p}" for p in stale]
    )
    if mine and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_REPORT_KEY, [])
    if lines:
        terminalreporter.section("ringbuf")
        for line in lines:
            terminalreporter.write_line(line)
