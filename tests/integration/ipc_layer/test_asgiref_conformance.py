"""asgiref 1.1.2's own conformance suite against ``IPCChannelLayer``.

asgiref 1.1.2 (the ASGI 1 reference, whose ``ConformanceTestCase`` asgi_ipc
and asgi_redis shipped against) conflicts with the asgiref 3 that Django
needs, so this test makes a clean virtualenv in a temporary directory,
installs ``asgiref==1.1.2`` (fetched from the package index now, never
vendored), msgpack and the cffi this checkout's extension was built with,
and runs ``asgiref_conformance_runner.py`` (beside this file) there with the repository
on ``PYTHONPATH`` (the built ``_ringbuf`` extension included).

Skipped, with the reason, only when the package index cannot be reached.
"""
from __future__ import annotations

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest

from tests.support import remove_segment, unique_prefix

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[3]
RUNNER = pathlib.Path(__file__).with_name("asgiref_conformance_runner.py")
TESTS_IN_SUITE = 18

# What pip prints when it cannot reach the index (or the index lacks the release).
_UNREACHABLE = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "No matching distribution found for asgiref==1.1.2",
    "Could not find a version that satisfies the requirement asgiref==1.1.2",
    "Network is unreachable",
)


def test_asgiref_1_1_2_conformance(tmp_path: pathlib.Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    requirements = [
        "asgiref==1.1.2",
        f"cffi=={importlib.metadata.version('cffi')}",  # the _cffi_backend the extension was built against
        f"msgpack=={importlib.metadata.version('msgpack')}",
    ]
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-input", *requirements],
                             capture_output=True, text=True, timeout=600)
    if install.returncode != 0:
        output = install.stdout + install.stderr
        if any(marker in output for marker in _UNREACHABLE):
            pytest.skip(f"package index unreachable, cannot fetch asgiref 1.1.2: {output.strip()[-400:]}")
        pytest.fail(f"pip install {' '.join(requirements)} failed:\n{output[-3000:]}")

    prefix = unique_prefix()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(ROOT)
    try:
        run = subprocess.run([str(python), "-X", "dev", str(RUNNER), prefix], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    finally:
        remove_segment(prefix)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert f"ran {TESTS_IN_SUITE}, failures 0, errors 0, skipped 0" in output, output[-3000:]
