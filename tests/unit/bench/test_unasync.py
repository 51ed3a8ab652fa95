"""The bench's one-source roles: :mod:`bench.unasync` twins and :func:`bench.scenarios.run_role`.

Each scenario role is written once as an ``async def``; the synchronous layers run a twin
derived from its syntax tree. These tests pin what the twin must be (plain calls, the
helpers' twins, the source's line numbers) and what the converter refuses.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import textwrap
import traceback
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from bench import scenarios
from bench.drivers import Full
from bench.unasync import sync_twins

SOURCE = '''
from __future__ import annotations

CALLS: list[str] = []


async def _helper(driver: Any, value: int) -> int:
    return await driver.double(value) + 1


async def role(driver: Any, value: int) -> int:
    async def inner() -> int:
        return await _helper(driver, value)

    return await inner()


async def broken(driver: Any) -> None:
    raise RuntimeError("the failing line")


def plain() -> str:
    return "untouched"
'''


def _load(tmp_path: Path, name: str, source: str) -> ModuleType:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _SyncDoubler:
    def double(self, value: int) -> int:
        return 2 * value


class _AsyncDoubler:
    async def double(self, value: int) -> int:
        await asyncio.sleep(0)
        return 2 * value


def test_twins_are_plain_functions_running_the_same_logic(tmp_path: Path) -> None:
    module = _load(tmp_path, "roles_ok", SOURCE)
    twins = sync_twins(module)
    assert set(twins) == {"_helper", "role", "broken"}  # only the async defs
    assert not any(inspect.iscoroutinefunction(f) for f in twins.values())
    assert twins["role"](_SyncDoubler(), 20) == 41  # the nested def and the helper's twin
    assert asyncio.run(module.role(_AsyncDoubler(), 20)) == 41  # the source, unchanged
    assert module.plain() == "untouched"


def test_twin_tracebacks_point_at_the_async_source(tmp_path: Path) -> None:
    module = _load(tmp_path, "roles_tb", SOURCE)
    with pytest.raises(RuntimeError) as info:
        sync_twins(module)["broken"](None)
    frame = traceback.extract_tb(info.value.__traceback__)[-1]
    lineno = SOURCE.splitlines().index('    raise RuntimeError("the failing line")') + 1
    assert (frame.filename, frame.lineno) == (module.__file__, lineno)


@pytest.mark.parametrize(
    "body",
    ["async for x in it:\n    pass", "async with cm:\n    pass"],
    ids=["async-for", "async-with"],
)
def test_constructs_without_a_sync_twin_are_refused(tmp_path: Path, body: str) -> None:
    source = "async def role(it, cm):\n" + textwrap.indent(body, "    ") + "\n"
    module = _load(tmp_path, "roles_bad", source)
    with pytest.raises(ValueError, match="line 2: 'async (for|with)' has no synchronous twin"):
        sync_twins(module)


class _FullTwice:
    """A driver whose ``send`` is full twice, then takes the message; ``pause`` is counted."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.pauses = 0
        self._refusals = 2

    def _send(self, message: dict[str, Any]) -> None:
        if self._refusals:
            self._refusals -= 1
            raise Full("full")
        self.sent.append(message)


class _SyncFullTwice(_FullTwice):
    def send(self, channel: str, message: dict[str, Any]) -> None:
        self._send(message)

    def pause(self, seconds: float) -> None:
        self.pauses += 1


class _AsyncFullTwice(_FullTwice):
    async def send(self, channel: str, message: dict[str, Any]) -> None:
        self._send(message)

    async def pause(self, seconds: float) -> None:
        self.pauses += 1


def test_send_helper_backs_off_through_the_driver_in_both_forms() -> None:
    ctx = SimpleNamespace(recv_timeout=5.0)
    sync_driver, aio_driver = _SyncFullTwice(), _AsyncFullTwice()
    assert scenarios._SYNC_ROLES["_send"](sync_driver, "c", {"n": 1}, ctx) == 2
    assert asyncio.run(scenarios._send(aio_driver, "c", {"n": 1}, ctx)) == 2  # type: ignore[arg-type]
    for driver in (sync_driver, aio_driver):
        assert driver.sent == [{"n": 1}] and driver.pauses == 2


def test_every_role_has_a_sync_twin() -> None:
    roles = [name for name in scenarios._SYNC_ROLES if not name.startswith("_")]
    assert {"pingpong_client", "pingpong_server", "group_sender", "group_drainer",
            "mpmc_producer", "mpmc_consumer", "idle_receiver", "idle_waker",
            "mixed_sender", "mixed_receiver", "probe"} <= set(roles)
    for name in roles:
        assert inspect.iscoroutinefunction(getattr(scenarios, name)), name


@pytest.mark.parametrize("name", ["_send", "no_such_role"])
def test_run_role_refuses_helpers_and_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match=f"unknown role '{name}'"):
        scenarios.run_role(name, _SyncDoubler())  # type: ignore[arg-type]
