"""The native asyncio driving's receive timeout: one watchdog per role, no timer per receive.

A receive past its timeout returns ``(None, None)`` (the watchdog's cancel is undone, so
the role goes on); any other cancellation still propagates.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("channels", reason="channels 4 is not installed")

from bench import drivers
from ipc_layer.aio import IPCChannelLayer
from tests.support import TEST_SEGMENT_SIZE

pytestmark = pytest.mark.timeout(60)


def _driver(prefix: str, monkeypatch: pytest.MonkeyPatch) -> drivers.Channels4AioDriver:
    monkeypatch.setattr(drivers, "_WATCHDOG_S", 0.05)
    layer = IPCChannelLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE)
    return drivers.Channels4AioDriver("ipc_aio", layer, ())


@pytest.mark.skipif(not drivers._CAN_UNCANCEL, reason="Task.uncancel needs Python 3.11")
def test_receive_past_its_timeout_returns_none_and_the_role_goes_on(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = _driver(prefix, monkeypatch)

    async def role() -> tuple[object, float, object]:
        start = time.monotonic()
        timed_out = await driver.receive(["wd.empty"], 0.2)
        waited = time.monotonic() - start
        await driver.send("wd.next", {"type": "after"})
        return timed_out, waited, await driver.receive(["wd.next"], 5.0)

    try:
        timed_out, waited, after = driver.run(role())
        assert timed_out == (None, None)
        assert 0.2 <= waited < 1.0
        assert after == ("wd.next", {"type": "after"})  # not cancelled any more
    finally:
        driver.close()


def test_other_cancellations_propagate(prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = _driver(prefix, monkeypatch)

    async def role() -> None:
        receiving = asyncio.ensure_future(driver.receive(["wd.empty"], 30.0))
        await asyncio.sleep(0.05)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving

    try:
        driver.run(role())
    finally:
        driver.close()
