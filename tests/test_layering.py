"""The package boundaries of DESIGN.md, enforced: every .py file's imports, read with ast.

Rules (an edge not listed is allowed):

1. ``server/`` and ``worker/`` never import each other, and never ``_ringbuf``: they stand
   on ``ipc_layer``'s public API only, so the in-memory and Redis layers drop in.
2. Only ``ipc_layer`` imports ``_ringbuf`` (and ``_ringbuf`` itself). Exceptions, on purpose:
   - the bench modules in ``RAW_CORE_BENCH``: ``python -m bench.core`` and the
     ``ringbuf_raw`` layer measure the raw core, the limit every layer is compared with;
   - ``tests/``: the core's own tests and the shared-memory fixtures (prefix cleanup, leak
     check) need it. Tests of ``server``/``worker`` (any ``server``/``worker`` folder under
     ``tests/``) follow their package's rules instead.
3. ``_ringbuf`` imports nothing of the project but ``_memo``: it knows bytes, not ASGI.
4. ``ipc_layer`` never imports ``server``, ``worker``, ``bench`` or ``tests``, nor Twisted,
   autobahn, Django or Daphne: protocol servers and frameworks stand on it, not under it.
   Exceptions, on purpose (``TWISTED_ADAPTER``): ``ipc_layer/twisted_ext.py``, the ASGI 1
   ``twisted`` extension's adapter (imported only when ``receive_twisted`` is first called,
   as ``aio.py`` alone imports Channels), and the shipped conformance suite, which drives a
   private reactor to test that extension.
5. ``_memo.py`` (the bounded-cache helper the binding and ``ipc_layer`` share) is a leaf: it
   imports nothing of the project, so anyone may import it.
6. The worker pool's master-side modules (``WORKER_MASTER_SIDE``: the arbiter, its OS seam, the
   heartbeat, the option table) never import Django or a channel layer: the master supervises
   processes, and a worker's Django code lives only in the workers it spawns.
7. ``examples/`` are applications: they stand on the public packages (``ipc_layer``,
   ``worker``) and run ``ipc-server`` as a process, so they never import ``server``, ``bench``
   or ``tests``; and nothing of the project but ``tests`` imports them.

Imports are read statically: ``import x``, ``from x import y``, relative imports resolved
against the file's package, and ``importlib.import_module("x")`` with a literal name,
wherever they stand (function bodies and ``TYPE_CHECKING`` blocks included).
"""

from __future__ import annotations

import ast
import os
import pathlib
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parent.parent

#: Bench modules that may import _ringbuf (rule 2): they measure the raw core on purpose.
RAW_CORE_BENCH = frozenset({"bench/core.py", "bench/drivers.py"})
#: worker modules the master runs without Django (rule 6).
WORKER_MASTER_SIDE = frozenset({"worker/arbiter.py", "worker/osapi.py", "worker/heartbeat.py", "worker/config.py"})
#: ipc_layer modules that may import Twisted (rule 4): the twisted extension and its tests.
TWISTED_ADAPTER = frozenset({"ipc_layer/twisted_ext.py", "ipc_layer/testing/conformance.py"})

PROJECT = frozenset({"_memo", "_ringbuf", "ipc_layer", "server", "worker", "bench", "examples", "tests"})
FRAMEWORKS = frozenset({"twisted", "autobahn", "django", "daphne"})

#: Folders never walked: build outputs, caches, virtual environments, VCS data.
SKIP_DIRS = frozenset({"build", "dist", "bench-results", "__pycache__", "node_modules", "venv"})


def python_files(root: pathlib.Path) -> Iterator[pathlib.Path]:
    """Every .py file under ``root`` outside build outputs and hidden folders."""
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not (d in SKIP_DIRS or d.startswith(".") or d.endswith(".egg-info")))
        for name in sorted(files):
            if name.endswith(".py"):
                yield pathlib.Path(folder, name)


def owner(rel: str) -> str:
    """Whose rules a file follows: its top folder, or server/worker for their tests."""
    parts = rel.split("/")
    if parts[0] == "tests":
        for part in parts[1:-1]:
            if part in ("server", "worker"):
                return part
        return "tests"
    return parts[0] if len(parts) > 1 else ""


def _package_of(rel: str) -> list[str]:
    parts = rel[: -len(".py")].split("/")
    return parts[:-1]  # a module's package; for __init__.py the package itself


def imports(path: pathlib.Path, rel: str) -> Iterator[tuple[str, int]]:
    """(absolute module name, line) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module or "", node.lineno
                continue
            package = _package_of(rel)
            base = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
            module = ".".join(base + ([node.module] if node.module else []))
            yield module, node.lineno
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, (ast.Attribute, ast.Name))
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.args[0].value, node.lineno


def rule_broken(who: str, rel: str, module: str) -> str | None:
    """The rule an import of ``module`` by ``rel`` (owned by ``who``) breaks, or None."""
    top = module.split(".")[0]
    if who in ("server", "worker"):
        other = "worker" if who == "server" else "server"
        if top == other:
            return f"{who}/ never imports {other}/ (rule 1)"
        if top == "_ringbuf":
            return f"{who}/ never imports _ringbuf: only ipc_layer's public API (rule 1)"
    if top == "_ringbuf" and who not in ("_ringbuf", "ipc_layer", "tests") and rel not in RAW_CORE_BENCH:
        return "only ipc_layer imports _ringbuf (rule 2)"
    if who == "_ringbuf" and top in PROJECT - {"_ringbuf", "_memo"}:
        return "_ringbuf imports nothing of the project but _memo (rule 3)"
    if rel == "_memo.py" and top in PROJECT:
        return "_memo imports nothing of the project (rule 5)"
    if rel in WORKER_MASTER_SIDE and (top in ("django", "ipc_layer") or module.startswith(
            ("worker.asgi", "worker.routing", "worker.child", "worker.loop", "worker.http"))):
        return "the worker master's modules import no Django or layer (rule 6)"
    if who == "examples" and top in ("server", "bench", "tests"):
        return f"examples/ never import {top} (rule 7)"
    if top == "examples" and who not in ("examples", "tests"):
        return f"{who or rel} never imports examples (rule 7)"
    if who == "ipc_layer" and top == "twisted" and rel in TWISTED_ADAPTER:
        return None
    if who == "ipc_layer" and (top in PROJECT - {"_memo", "_ringbuf", "ipc_layer"} or top in FRAMEWORKS):
        return f"ipc_layer never imports {top} (rule 4)"
    return None


def violations(root: pathlib.Path) -> list[tuple[str, int, str, str]]:
    """(file, line, imported module, broken rule) for every forbidden import under ``root``."""
    found = []
    for path in python_files(root):
        rel = path.relative_to(root).as_posix()
        who = owner(rel)
        for module, line in imports(path, rel):
            broken = rule_broken(who, rel, module)
            if broken:
                found.append((rel, line, module, broken))
    return found


def test_the_repository_keeps_its_layers() -> None:
    found = violations(REPO)
    assert not found, "forbidden imports:\n" + "\n".join(
        f"{rel}:{line}: imports {module}: {rule}" for rel, line, module, rule in found
    )


def test_the_walk_covers_the_packages() -> None:
    # A walk that found nothing would pass the test above for nothing.
    rels = {p.relative_to(REPO).as_posix() for p in python_files(REPO)}
    for expected in ("_ringbuf/binding.py", "ipc_layer/layer.py", "bench/core.py", "examples/chat/settings.py",
                     "tests/conftest.py"):
        assert expected in rels
    imported = {m for m, _ in imports(REPO / "ipc_layer" / "layer.py", "ipc_layer/layer.py")}
    assert "_ringbuf" in imported
    assert rels >= RAW_CORE_BENCH, "a listed bench exception no longer exists: update RAW_CORE_BENCH"
    assert rels >= WORKER_MASTER_SIDE, "a listed worker master module no longer exists: update WORKER_MASTER_SIDE"


def _tree(root: pathlib.Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_catches_each_rule(tmp_path: pathlib.Path) -> None:
    _tree(
        tmp_path,
        {
            # allowed
            "ipc_layer/__init__.py": "",
            "ipc_layer/layer.py": "import _ringbuf\nfrom _ringbuf.binding import Segment\nimport msgpack\n",
            "_ringbuf/binding.py": "from . import _native\nimport os\nfrom _memo import remember\n",
            "bench/core.py": "import _ringbuf\n",
            "tests/unit/ringbuf/test_core.py": "from _ringbuf import Segment\n",
            "server/ok.py": "from ipc_layer import IPCChannelLayer\nfrom . import protocol\n",
            "server/sub/rel.py": "from ..http import Request\n",  # server.http: allowed
            "worker/ok.py": "import ipc_layer.loading\n",
            "build/lib/server/copy.py": "import worker\n",  # a build output: not walked
            ".venv/server/x.py": "import _ringbuf\n",  # hidden: not walked
            # rule 1
            "server/bad.py": "import worker.loop\n",
            "worker/bad.py": "def f():\n    from _ringbuf import Segment\n",
            "worker/dyn.py": "import importlib\nimportlib.import_module('server.http')\n",
            "tests/unit/server/test_bad.py": "import _ringbuf\n",
            # rule 2
            "bench/other.py": "import _ringbuf.binding\n",
            "tools.py": "from _ringbuf import unlink\n",
            # rule 3
            "_ringbuf/bad.py": "from ipc_layer import names\n",
            # rule 4
            "ipc_layer/bad.py": "from twisted.internet import reactor\nfrom bench import stats\n",
            # rule 4's exception covers Twisted in the extension's adapter, nothing else
            "ipc_layer/twisted_ext.py": "from twisted.internet import defer\nimport autobahn\n",
            # rule 5
            "_memo.py": "from typing import TypeVar\nimport ipc_layer.names\n",
            # rule 6
            "worker/arbiter.py": "from .osapi import OSAPI\nfrom django.conf import settings\n",
            "worker/osapi.py": "def f():\n    from .loop import WorkerLoop\n",
            # rule 7
            "examples/chat/ok.py": "from worker import Group\nfrom ipc_layer import loading\nfrom . import models\n",
            "examples/chat/bad.py": "from server.cli import main\nimport tests.support\n",
            "worker/demo.py": "from examples.chat import settings\n",
            "tests/integration/examples/test_ok.py": "import examples.chat.demo\n",
        },
    )
    assert [m for m, _ in imports(tmp_path / "server/sub/rel.py", "server/sub/rel.py")] == ["server.http"]
    found = {f"{rel} {module}" for rel, _, module, _ in violations(tmp_path)}
    assert found == {
        "server/bad.py worker.loop",
        "worker/bad.py _ringbuf",
        "worker/dyn.py server.http",
        "tests/unit/server/test_bad.py _ringbuf",
        "bench/other.py _ringbuf.binding",
        "tools.py _ringbuf",
        "_ringbuf/bad.py ipc_layer",
        "ipc_layer/bad.py twisted.internet",
        "ipc_layer/bad.py bench",
        "ipc_layer/twisted_ext.py autobahn",
        "_memo.py ipc_layer.names",
        "worker/arbiter.py django.conf",
        "worker/osapi.py worker.loop",
        "examples/chat/bad.py server.cli",
        "examples/chat/bad.py tests.support",
        "worker/demo.py examples.chat",
    }
