"""Synchronous twins of ``async def`` functions, derived from their source at import time.

The bench writes each scenario role once, as an ``async def`` that awaits its driver's
operations (``await driver.send(...)``), because that is how a Channels 4 consumer runs:
one coroutine on the process's event loop, a plain ``await layer.op(...)`` per operation.
The synchronous layers (ASGI 1, the raw baselines) must run the *same* role logic as plain
function calls, without paying for coroutines: a round trip crosses about ten role and
driver calls, and each coroutine costs ~70 ns more than a call on CPython 3.11. Stepping
the ``async def`` roles with ``coro.send(None)`` over coroutine wrappers of the sync
drivers was measured: ``ipc`` ping-pong p50 with ``--spin-us 50`` went from 5.66-5.72 us
to 6.02-6.13 us, beyond the figure's noise (~0.05 us); the twins keep it unchanged.

So the twin is made the way httpcore and redis-py make their sync code ("unasync"), but
from the syntax tree instead of a generated file: every ``async def`` becomes a ``def``
and every ``await x`` becomes ``x``. Nothing else changes, so a sync driver with the same
method names (``send``, ``receive``, ``pause``, ...) runs the role exactly as if it had
been written synchronously. The twins are compiled under the module's own file name with
the original line numbers: tracebacks and coverage point at the ``async def`` source.

Rules for functions converted here: no ``async for``, ``async with`` or ``asyncio`` calls
(they have no synchronous meaning; anything asynchronous belongs to the driver, e.g.
``await driver.pause(s)`` instead of ``asyncio.sleep(s)``). The converter refuses the first
two; the third is the reviewer's job.
"""

from __future__ import annotations
import __future__  # the module itself: its annotations flag (see sync_twins)

import ast
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

__all__ = ["sync_twins"]


class _Unasync(ast.NodeTransformer):
    """``async def`` -> ``def``, ``await x`` -> ``x``; refuses constructs without a sync twin."""

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        fields = {name: getattr(node, name) for name in node._fields}
        return ast.copy_location(ast.FunctionDef(**fields), node)

    def visit_Await(self, node: ast.Await) -> ast.AST:
        value: ast.AST = self.visit(node.value)
        return value

    def visit_AsyncFor(self, node: ast.AsyncFor) -> ast.AST:
        raise ValueError(f"line {node.lineno}: 'async for' has no synchronous twin")

    def visit_AsyncWith(self, node: ast.AsyncWith) -> ast.AST:
        raise ValueError(f"line {node.lineno}: 'async with' has no synchronous twin")


def sync_twins(module: ModuleType) -> dict[str, Callable[..., Any]]:
    """The synchronous twin of every top-level ``async def`` of ``module``, by name.

    The twins run in a copy of the module's namespace in which each converted name is
    the twin, so a twin calling another converted function (a helper) calls its twin.
    Non-async names are shared with the module as they were when this ran.
    """
    tree = ast.parse(inspect.getsource(module))
    defs = [node for node in tree.body if isinstance(node, ast.AsyncFunctionDef)]
    converted = ast.Module(body=[_Unasync().visit(node) for node in defs], type_ignores=[])
    ast.fix_missing_locations(converted)
    # The module's own "from __future__ import annotations": hints stay unevaluated.
    flags = __future__.annotations.compiler_flag
    code = compile(converted, inspect.getsourcefile(module) or module.__name__, "exec", flags, True)
    namespace = dict(vars(module))
    exec(code, namespace)  # noqa: S102  (the module's own source, converted above)
    return {node.name: namespace[node.name] for node in defs}
