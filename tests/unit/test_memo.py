"""``_memo``: the one bounded-cache rule, and every memo table of the project held to it.

Each table is driven past ``LIMIT`` distinct keys: it never holds more, and
what it answers after being emptied is still right (a bad name is refused
every time; failures are never stored).
"""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

import _memo
import _ringbuf
from ipc_layer import names
from ipc_layer.capacity import ChannelCapacities
from tests.support import make_layer

LIMIT = _memo.LIMIT
MANY = LIMIT + 100


def test_remember_empties_the_table_at_the_limit() -> None:
    table: dict[int, str] = {}
    for key in range(5):
        assert _memo.remember(table, key, str(key), limit=3) == str(key)
        assert len(table) <= 3
    # 0, 1, 2 filled it; 3 emptied it first; then 4.
    assert table == {3: "3", 4: "4"}


def test_name_tables_stay_bounded_and_right() -> None:
    for validate, table, make in (
            (names.validate_channel, names._CHANNELS_OK, "memo.c{}".format),
            (names.validate_receive_channel, names._RECEIVE_OK, "memo.r{}!".format),
            (names.validate_group, names._GROUPS_OK, "memo.g{}".format)):
        for i in range(MANY):
            assert validate(make(i)) == make(i)
            assert len(table) <= LIMIT
        with pytest.raises(TypeError):
            validate("memo bad")
        assert "memo bad" not in table


def test_capacity_table_stays_bounded_and_right() -> None:
    caps = ChannelCapacities(10, {"memo.small*": 2})
    for i in range(MANY):
        assert caps.get(f"memo.small{i}!x") == 2
        assert caps.get(f"memo.other{i}") == 10
        assert len(caps._known) <= LIMIT


def test_layer_tables_stay_bounded(prefix: str) -> None:
    layer = make_layer(prefix, capacity=MANY + 1)
    try:
        for i in range(MANY):
            layer.send(f"memo.q!{i}", {"i": i})  # one queue, many routes
            assert len(layer._routes) <= LIMIT
            assert layer.receive([f"memo.n{i}"]) == (None, None)
            assert len(layer._receivers) <= LIMIT
            layer.group_add(f"memo.g{i}", "memo.member")
            layer.send_group(f"memo.g{i}", {"i": i})
            assert len(layer._groups._group_bytes) <= LIMIT
        # Every message went where its route (remembered or made again) said.
        for i in range(MANY):
            assert layer.receive(["memo.q!"]) == (f"memo.q!{i}", {"i": i})
            assert layer.receive(["memo.member"]) == ("memo.member", {"i": i})
        seg = layer.segment
        for i in range(MANY):
            assert seg.receive((f"memo.b{i}".encode(),)) is None
            assert len(seg._blobs) <= LIMIT
    finally:
        layer.flush()
        layer.close()


def test_aio_tables_stay_bounded(prefix: str) -> None:
    pytest.importorskip("channels")
    from ipc_layer.aio import IPCChannelLayer as AioLayer
    from tests.support import TEST_SEGMENT_SIZE

    layer = AioLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE, capacity=MANY + 1)

    async def run() -> None:
        for i in range(MANY):
            await layer.send(f"memo.a{i}", {"i": i})
            assert len(layer._send_ok) <= LIMIT
            layer._plan_receive(f"memo.a{i}")
            assert len(layer._receive_plans) <= LIMIT
        assert await layer.receive(f"memo.a{MANY - 1}") == {"i": MANY - 1}
        with pytest.raises(TypeError):
            await layer.send("memo?bad", {})
        await layer.flush()
        await layer.close()

    asyncio.run(run())


def test_binding_does_not_import_the_layer() -> None:
    # _memo is a leaf: the binding may use it without any ipc_layer module.
    import ast
    import pathlib

    for module in (_memo, _ringbuf):
        path = pathlib.Path(module.__file__ or "")
        files = [path] if path.name != "__init__.py" else list(path.parent.glob("*.py"))
        for file in files:
            tree = ast.parse(file.read_text())
            imported: list[Any] = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
            for node in imported:
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(m.startswith("ipc_layer") for m in mods), (file, mods)


def test_a_bytes_name_never_meets_a_remembered_str() -> None:
    # Under -bb a bytes == str comparison raises BytesWarning: a bytes name
    # equal in text to a remembered str must still be the TypeError naming it.
    for validate, name in ((names.validate_channel, "memo.same"), (names.validate_group, "memo.same"),
                           (names.validate_receive_channel, "memo.same")):
        validate(name)
        with pytest.raises(TypeError, match="must be a str"):
            validate(name.encode())
