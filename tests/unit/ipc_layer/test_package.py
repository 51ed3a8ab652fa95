"""The ipc_layer package surface: exports, lazy import, base contract, source rules."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from typing import Any

import pytest

import ipc_layer
from ipc_layer import base, exceptions
from ipc_layer.base import BaseChannelLayer, ReceiveResult

PACKAGE_DIR = pathlib.Path(ipc_layer.__file__).parent


def test_exports() -> None:
    assert ipc_layer.__version__ == "0.1.0"
    for name in ipc_layer.__all__:
        assert hasattr(ipc_layer, name), name
    assert "IPCChannelLayer" in dir(ipc_layer)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ipc_layer.nope  # noqa: B018


def test_import_does_not_need_the_c_core() -> None:
    code = (
        "import sys; sys.modules['_ringbuf'] = None\n"
        "import ipc_layer, ipc_layer.testing\n"
        "assert 'ipc_layer.layer' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE_DIR.parent)


def test_exception_hierarchy() -> None:
    assert issubclass(exceptions.ChannelFull, Exception)
    assert not issubclass(exceptions.ChannelFull, (ValueError, TypeError))
    assert issubclass(exceptions.MessageTooLarge, ValueError)
    assert issubclass(exceptions.SegmentError, OSError)
    assert issubclass(exceptions.LayoutMismatch, exceptions.SegmentError)
    assert BaseChannelLayer.ChannelFull is exceptions.ChannelFull
    assert BaseChannelLayer.MessageTooLarge is exceptions.MessageTooLarge


class _Minimal(BaseChannelLayer):
    def send(self, channel: str, message: dict[str, Any]) -> None:
        self.sent = (channel, message)

    def receive(self, channels: Any, block: bool = False) -> ReceiveResult:
        return None, None

    def new_channel(self, pattern: str) -> str:
        return pattern + "x"


def test_base_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        BaseChannelLayer()  # type: ignore[abstract]


def test_base_defaults_and_missing_extensions() -> None:
    layer = _Minimal()
    assert (layer.expiry, layer.group_expiry, layer.capacity) == (60, 86400, 100)
    assert layer.blocking_timeout == base.DEFAULT_BLOCKING_TIMEOUT
    assert layer.max_message_size == 1 << 20
    assert layer.extensions == ()
    for call in (
        lambda: layer.group_add("g", "c"),
        lambda: layer.group_discard("g", "c"),
        lambda: layer.group_channels("g"),
        lambda: layer.send_group("g", {}),
    ):
        with pytest.raises(NotImplementedError, match="'groups' extension"):
            call()
    with pytest.raises(NotImplementedError, match="'flush'"):
        layer.flush()
    with pytest.raises(NotImplementedError, match="'statistics'"):
        layer.global_statistics()
    with pytest.raises(NotImplementedError, match="'statistics'"):
        layer.channel_statistics("c")
    with pytest.warns(DeprecationWarning, match="receive_many"):
        assert layer.receive_many(["c"]) == (None, None)
    assert layer.new_process_channel("srv").startswith("srv.")


def _python_files() -> list[pathlib.Path]:
    return sorted(PACKAGE_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_no_assert_and_no_random(path: pathlib.Path) -> None:
    # Input checks must survive `python -O`; names come from `secrets`.
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        assert not isinstance(node, ast.Assert), f"{path}:{node.lineno} uses assert"
        if isinstance(node, ast.Import):
            assert all(alias.name != "random" for alias in node.names), f"{path}:{node.lineno}"
        if isinstance(node, ast.ImportFrom):
            assert node.module != "random", f"{path}:{node.lineno}"
