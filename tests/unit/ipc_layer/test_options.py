"""``ipc_layer.options``: every option declared once, and every layer held to the declaration.

One parametrized suite over every layer kind (the conformance style): for
each option a kind takes, a bad type raises ``TypeError`` and each value
just outside its range raises ``ValueError`` naming the option, the value
and the range, at construction (a shared-memory layer creates no segment);
the value at each edge inside the range constructs, and the layer works
with it. Then the declarations are tied to what they describe: the
constructors' signatures and defaults, the C core's limits, ``loading``,
the command-line helpers and the README's table.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import _ringbuf
from ipc_layer import InMemoryChannelLayer, IPCChannelLayer, loading, options
from ipc_layer import layer as layer_module
from ipc_layer.base import BaseChannelLayer
from tests.support import TEST_SEGMENT_SIZE, remove_segment, segment_files, unique_prefix

pytestmark = pytest.mark.timeout(120)

README = os.path.join(os.path.dirname(__file__), "..", "..", "..", "README.rst")


# -- the layers, one factory per kind ----------------------------------------------------


class Maker:
    """Makes layers of one kind with a given config, and cleans up after them."""

    kind = ""

    def __init__(self) -> None:
        self.made: list[Any] = []
        self.prefixes: list[str] = []

    def make(self, **config: Any) -> Any:
        raise NotImplementedError

    def round_trip(self, layer: Any) -> None:
        """A send, a receive and a group send with the layer as configured."""
        layer.send("opt.rt", {"type": "x"})
        assert layer.receive(["opt.rt"]) == ("opt.rt", {"type": "x"})
        layer.group_add("opt.g", "opt.member")
        layer.send_group("opt.g", {"type": "g"})
        assert layer.receive(["opt.member"]) == ("opt.member", {"type": "g"})

    def left_nothing(self) -> bool:
        """No segment (or key) was created by a refused construction."""
        return True

    def close(self) -> None:
        for made in self.made:
            try:
                made.flush()
            finally:
                made.close()


class IPCMaker(Maker):
    kind = "ipc"

    def make(self, **config: Any) -> Any:
        prefix = unique_prefix()
        self.prefixes.append(prefix)
        config.setdefault("segment_size", TEST_SEGMENT_SIZE)
        layer = IPCChannelLayer(prefix=prefix, **config)
        self.made.append(layer)
        return layer

    def left_nothing(self) -> bool:
        return not any(segment_files(prefix) for prefix in self.prefixes)

    def close(self) -> None:
        try:
            super().close()
        finally:
            for prefix in self.prefixes:
                remove_segment(prefix)


class AioMaker(IPCMaker):
    kind = "aio"

    def make(self, **config: Any) -> Any:
        from ipc_layer.aio import IPCChannelLayer as AioLayer

        prefix = unique_prefix()
        self.prefixes.append(prefix)
        config.setdefault("segment_size", TEST_SEGMENT_SIZE)
        layer = AioLayer(prefix=prefix, **config)
        self.made.append(layer)
        return layer

    def round_trip(self, layer: Any) -> None:
        async def run() -> None:
            await layer.send("opt.rt", {"type": "x"})
            assert await asyncio.wait_for(layer.receive("opt.rt"), 10) == {"type": "x"}
            await layer.group_add("opt.g", "opt.member")
            await layer.group_send("opt.g", {"type": "g"})
            assert await asyncio.wait_for(layer.receive("opt.member"), 10) == {"type": "g"}

        asyncio.run(run())

    def close(self) -> None:
        async def shut(made: Any) -> None:
            await made.flush()
            await made.close()

        for made in self.made:
            asyncio.run(shut(made))
        self.made.clear()
        for prefix in self.prefixes:
            remove_segment(prefix)


class InMemoryMaker(Maker):
    kind = "inmemory"

    def make(self, **config: Any) -> Any:
        layer = InMemoryChannelLayer(**config)
        self.made.append(layer)
        return layer


class RedisMaker(Maker):
    kind = "redis"

    def make(self, **config: Any) -> Any:
        from ipc_layer.redis_layer import RedisChannelLayer
        from tests.support import unique_key_prefix as redis_prefix

        prefix = redis_prefix()
        self.prefixes.append(prefix)
        # Construction does not connect: refusals need no server.
        layer = RedisChannelLayer("redis://127.0.0.1:1/0", prefix=prefix, **config)
        self.made.append(layer)
        return layer

    def round_trip(self, layer: Any) -> None:
        from ipc_layer.redis_layer import RedisChannelLayer
        from tests.redis_support import redis_url

        url = redis_url()  # SkipTest with the reason when there is no Redis
        config = {name: getattr(layer, name) for name in options.accepted("base")}
        live = RedisChannelLayer(url, prefix=layer.prefix, **config)
        self.made.append(live)
        super().round_trip(live)

    def close(self) -> None:
        for made in self.made:
            made.close()
        if any(shard._checked for made in self.made for shard in made._shards):
            from tests.redis_support import redis_url
            from tests.support import remove_keys

            for prefix in self.prefixes:
                remove_keys(redis_url(), prefix)


def _marks(maker: type[Maker]) -> list[Any]:
    marks = []
    if maker is AioMaker:
        try:
            import channels  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            marks.append(pytest.mark.skip(reason="channels 4 is not installed"))
    if maker is RedisMaker:
        try:
            import redis  # noqa: F401
        except ImportError:
            marks.append(pytest.mark.skip(reason="redis-py is not installed"))
    return marks


MAKERS = (IPCMaker, AioMaker, InMemoryMaker, RedisMaker)


@pytest.fixture
def maker(request: pytest.FixtureRequest) -> Iterator[Maker]:
    """The layer factory of the case's kind (``maker_cls`` comes from the parametrization)."""
    made: Maker = request.getfixturevalue("maker_cls")()
    try:
        yield made
    finally:
        made.close()


# -- the values: outside, inside and wrong types, per option ------------------------------

TEN_YEARS = 10 * 365 * 86400

#: option -> values just outside (or far outside) its range: ValueError.
OUTSIDE: dict[str, list[Any]] = {
    "expiry": [0, -1, float("nan"), float("inf"), TEN_YEARS + 1, 1e30],
    "group_expiry": [0, -0.5, float("nan"), TEN_YEARS + 0.001, 1e30],
    "blocking_timeout": [0, -1, float("inf"), 86400.5, 1e30],
    "capacity": [0, -1, 2**32, 2**33],
    "channel_capacity": [{"a*": 0}, {"a*": 2**32}],
    "max_message_size": [0, (1 << 30) - 255, 2**33],
    "spin_us": [-1, 60_000_001],
    "segment_size": [-1, (1 << 40) + 1, 2**64],
    "mode": [0, 0o400, 0o200, 0o1600, 0o2600, 0o4600, 0o7777, 0o1000, -1, 2**40],
    "slots": [-1, (1 << 24) + 1, 2**33],
    "waiters": [-1, 65537],
    "wakeup": ["", "poll", "FD"],
    "prefix": [""],
}

#: option -> values of the wrong type: TypeError.
WRONG_TYPE: dict[str, list[Any]] = {
    "expiry": ["60", None, True, [60]],
    "group_expiry": ["1", None, False],
    "blocking_timeout": ["5", None, True],
    "capacity": [1.0, "10", True, None],
    "channel_capacity": [[("a*", 2)], "a*=2", {"a*": 2.0}, {5: 2}],
    "max_message_size": [1.5, "1M", None, True],
    "spin_us": [1.5, "50", None, True],
    "segment_size": [1.0, "64M", None],
    "mode": [0.6, "600", None, True],
    "slots": [1.0, "16", None],
    "waiters": [1.0, "8", None],
    "wakeup": [None, 1, b"fd"],
    "prefix": [None, 5, b"ipc"],
    "clock": [None, 5, "time.monotonic"],
    "url": [1234, b"redis://x"],
    "hosts": ["redis://x", 5],
}

#: option -> values at the inside edges of its range that are cheap to run a layer with.
INSIDE: dict[str, list[Any]] = {
    "expiry": [TEN_YEARS, 5],
    "group_expiry": [TEN_YEARS, 5],
    "blocking_timeout": [86400, 0.001],
    "capacity": [2**32 - 1, 1],
    "channel_capacity": [{"opt.*": 2**32 - 1}, {"opt.*": 1}, None, {}],
    "max_message_size": [1 << 20, 1 << 10],
    "spin_us": [0, 1],
    "mode": [0o600, 0o777, 0o640],
    "wakeup": ["fd", "thread"],
}

#: Inside edges too large to build a segment with: checked by the declaration only
#: (test_core_takes_the_declared_maxima shows the core takes them).
INSIDE_DECLARATION_ONLY: dict[str, list[Any]] = {
    "expiry": [0.001, 1e-9],
    "group_expiry": [0.001],
    "max_message_size": [(1 << 30) - 256, 1],
    "segment_size": [0, 1 << 40],
    "slots": [0, 1 << 24],
    "waiters": [0, 65536],
    "spin_us": [60_000_000],
}


def _cases(table: dict[str, list[Any]]) -> list[Any]:
    return [pytest.param(name, value, id=f"{name}={value!r}"[:60]) for name, values in table.items()
            for value in values]


def _layer_cases(table: dict[str, list[Any]]) -> list[Any]:
    """(kind's maker, option, value) for every kind that takes the option: one suite, every layer."""
    return [pytest.param(maker_cls, name, value, id=f"{maker_cls.kind}-{name}={value!r}"[:70],
                         marks=_marks(maker_cls))
            for maker_cls in MAKERS for name, values in table.items()
            if name in options.accepted(maker_cls.kind) for value in values]


@pytest.mark.parametrize(("maker_cls", "name", "value"), _layer_cases(OUTSIDE))
def test_out_of_range_is_refused_at_construction_naming_option_value_and_range(
        maker_cls: type[Maker], maker: Maker, name: str, value: Any) -> None:
    config = {name: value}
    if name == "prefix":
        with pytest.raises(ValueError, match="prefix"):
            _make_with_prefix(maker, value)
        return
    with pytest.raises(ValueError) as caught:
        maker.make(**config)
    message = str(caught.value)
    assert message.startswith(name), message
    # The allowed range is in the message, as declared.
    rule = options.options_for(maker.kind)[name if name != "channel_capacity" else "capacity"].rule
    for token in re.findall(r"0o[0-7]+|[0-9]+|'[^']+'", rule.allowed):
        assert token in message, (token, message)
    if isinstance(value, (int, float)) and name != "mode":
        assert repr(value) in message
    assert maker.left_nothing(), "a refused construction created a segment"


def _make_with_prefix(maker: Maker, prefix: Any) -> Any:
    if maker.kind == "ipc":
        return IPCChannelLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE)
    if maker.kind == "aio":
        from ipc_layer.aio import IPCChannelLayer as AioLayer

        return AioLayer(prefix=prefix, segment_size=TEST_SEGMENT_SIZE)
    from ipc_layer.redis_layer import RedisChannelLayer

    return RedisChannelLayer("redis://127.0.0.1:1/0", prefix=prefix)


@pytest.mark.parametrize(("maker_cls", "name", "value"), _layer_cases(WRONG_TYPE))
def test_wrong_type_is_refused_at_construction_naming_the_option(
        maker_cls: type[Maker], maker: Maker, name: str, value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        if name == "prefix":
            _make_with_prefix(maker, value)
        elif name in ("url", "hosts"):
            from ipc_layer.redis_layer import RedisChannelLayer

            RedisChannelLayer(**{name: value})
        else:
            maker.make(**{name: value})
    assert str(caught.value).startswith(name), str(caught.value)
    assert maker.left_nothing()


@pytest.mark.parametrize(("maker_cls", "name", "value"), _layer_cases(INSIDE))
def test_inside_edges_construct_and_the_layer_works(
        maker_cls: type[Maker], maker: Maker, name: str, value: Any) -> None:
    layer = maker.make(**{name: value})
    if name == "mode":
        assert os.stat(f"/dev/shm/rbuf.{layer.prefix}").st_mode & 0o777 == value
    else:
        assert getattr(layer, name) == ({} if name == "channel_capacity" and value is None else value)
    maker.round_trip(layer)


@pytest.mark.parametrize(("name", "value"), _cases({**INSIDE, **INSIDE_DECLARATION_ONLY}))
def test_inside_edges_pass_the_declaration_for_every_kind(name: str, value: Any) -> None:
    for kind in options.KINDS:
        if name in options.accepted(kind):
            assert options.validate(kind, {name: value})[name] == value


def test_the_issues_values_no_longer_construct_and_then_fail_every_send(prefix: str) -> None:
    """Issue 11 point 6: each of these constructed, then sends raised OverflowError or a cffi error."""
    for config in ({"capacity": 2**32}, {"expiry": 1e30}, {"group_expiry": 1e30},
                   {"blocking_timeout": 1e30}, {"max_message_size": 2**33}, {"segment_size": 2**64},
                   {"slots": 2**33}, {"mode": 2**40}):
        (name,) = config
        with pytest.raises(ValueError, match=f"^{name} must be"):
            IPCChannelLayer(prefix=prefix, **config)
        assert not segment_files(prefix)


def test_mode_refuses_special_bits_and_creates_the_segment_with_the_mode_given(prefix: str) -> None:
    for bad in (0o4600, 0o2600, 0o1600):
        with pytest.raises(ValueError, match=r"no setuid, setgid or sticky bits\), got " + oct(bad)):
            IPCChannelLayer(prefix=prefix, mode=bad, segment_size=TEST_SEGMENT_SIZE)
    layer = IPCChannelLayer(prefix=prefix, mode=0o640, segment_size=TEST_SEGMENT_SIZE)
    try:
        assert os.stat(f"/dev/shm/rbuf.{prefix}").st_mode & 0o7777 == 0o640
    finally:
        layer.close()


# -- the declarations against what they describe --------------------------------------------


def _layer_classes() -> list[Any]:
    classes: list[Any] = [BaseChannelLayer, IPCChannelLayer, InMemoryChannelLayer]
    try:
        from ipc_layer.aio import IPCChannelLayer as AioLayer

        classes.append(AioLayer)
    except ImportError:
        pass
    try:
        from ipc_layer.redis_layer import RedisChannelLayer

        classes.append(RedisChannelLayer)
    except ImportError:
        pass
    try:
        from ipc_layer.hybrid import HybridChannelLayer

        classes.append(HybridChannelLayer)
    except ImportError:
        pass
    return classes


@pytest.mark.parametrize("cls", _layer_classes(), ids=lambda cls: cls.option_kind)
def test_each_signature_is_its_declaration(cls: Any) -> None:
    """The explicit keyword signature users and IDEs read holds exactly the declared options."""
    kind = cls.option_kind
    params = {name: p for name, p in inspect.signature(cls).parameters.items()}
    declared = options.options_for(kind)
    assert set(params) == set(declared)
    for name, option in declared.items():
        assert params[name].default is option.default, name
    # The docstring lists every option with its default and range.
    for name, option in declared.items():
        assert f":param {name}: {option.help}" in (cls.__doc__ or ""), name


def test_declared_limits_are_the_cores(prefix: str) -> None:
    """What the declarations allow at the top of each range, the core takes; one more, it refuses."""
    for option, maximum in (("max_record", options.RECORD_MAX), ("slots", options.SLOTS_MAX),
                            ("waiters", options.WAITERS_MAX)):
        # At the maximum the range check passes and creation stops later, at "too small".
        at_max: dict[str, Any] = {option: maximum}
        with pytest.raises(ValueError, match="too small|fewer than one max_record") as inside:
            _ringbuf.Segment(prefix, size=1 << 20, **at_max)
        assert "out of range" not in str(inside.value)
        over: dict[str, Any] = {option: maximum + 1}
        with pytest.raises(ValueError, match="out of range"):
            _ringbuf.Segment(prefix, size=1 << 20, **over)
    assert options.MESSAGE_SIZE_MAX + layer_module.FRAME_MAX == options.RECORD_MAX
    assert options.FRAME_RESERVE == layer_module.FRAME_MAX
    # trusted_uids and lock_timeout: the binding's own limits and default.
    assert options.TRUSTED_MAX == _ringbuf.TRUSTED_MAX
    assert options.LOCK_TIMEOUT_MAX == _ringbuf.binding.LOCK_TIMEOUT_MAX
    assert options.LOCK_TIMEOUT.default == _ringbuf.DEFAULT_LOCK_TIMEOUT
    with pytest.raises(ValueError, match=f"at most {options.TRUSTED_MAX} are allowed"):
        _ringbuf.Segment(prefix, trusted_uids=range(options.TRUSTED_MAX + 1))
    # Capacities are u32 in rb_send; deadlines u64 ns with room for the clock.
    seg = _ringbuf.Segment(prefix, size=1 << 20, max_record=1024, slots=64, waiters=4)
    try:
        seg.send(b"q", b"x", _ringbuf.now_ns() + options.SECONDS_MAX * 10**9, options.U32_MAX)
        with pytest.raises(OverflowError):
            seg.send(b"q", b"x", 0, options.U32_MAX + 1)
        assert seg.receive([b"q"]) == (0, b"x")
    finally:
        seg.close()
    assert _ringbuf.now_ns() + options.SECONDS_MAX * 10**9 < 2**63


def test_validate_names_every_unknown_option_and_fills_defaults() -> None:
    with pytest.raises(TypeError, match=r"^Thing got unknown option\(s\) \['capcity', 'prefx'\]; it accepts \["):
        options.validate("inmemory", {"capcity": 1, "prefx": "x"}, owner="Thing")
    config = options.validate("ipc", {"self": object(), "__class__": object, "capacity": 7})
    assert config[options.CAPACITY] == 7 and config["capacity"] == 7
    assert config[options.SEGMENT_SIZE] == options.SEGMENT_SIZE.default
    assert config.subset("base") == {name: config[name] for name in options.accepted("base")}
    assert set(config.as_dict()) == set(options.accepted("ipc"))
    with pytest.raises(ValueError, match="unknown layer kind 'nope'"):
        options.validate("nope")


def test_loading_names_unknown_config_keys_from_the_declarations() -> None:
    with pytest.raises(loading.InvalidLayerError) as caught:
        loading.load_layer("ipc_layer.IPCChannelLayer", {"capcity": 5, "wakeup": "fd"})
    assert "unknown option(s) ['capcity', 'wakeup']" in str(caught.value)
    assert repr(sorted(options.accepted("ipc"))) in str(caught.value)


def test_loading_reads_an_undeclared_subclass_from_its_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extended(InMemoryChannelLayer):
        def __init__(self, extra: int = 0, **config: Any) -> None:
            super().__init__(**config)
            self.extra = extra

    class Narrow(InMemoryChannelLayer):
        def __init__(self, capacity: int = 100) -> None:
            super().__init__(capacity=capacity)

    module = type(os)("opt_test_layers")
    module.Extended = Extended  # type: ignore[attr-defined]
    module.Narrow = Narrow  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "opt_test_layers", module)
    assert loading.load_layer("opt_test_layers.Extended", {"extra": 3, "capacity": 4}).extra == 3
    with pytest.raises(loading.InvalidLayerError, match=r"unknown option\(s\) \['expiry'\]; it accepts \['capacity'\]"):
        loading.load_layer("opt_test_layers.Narrow", {"expiry": 3})


# -- command lines and docs ---------------------------------------------------------------------


def _parser(kind: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t", exit_on_error=False)
    options.add_arguments(parser, kind)
    return parser


def test_add_arguments_builds_checked_flags_from_the_declarations() -> None:
    parser = _parser("ipc")
    args = parser.parse_args(["--capacity", "5", "--segment-size", "16M", "--mode", "640", "--expiry", "2.5",
                              "--channel-capacity", "http.*=200", "--channel-capacity", "x!=3",
                              "--prefix", "site"])
    assert options.config_from_args(args, "ipc") == {
        "prefix": "site", "expiry": 2.5, "capacity": 5,
        "channel_capacity": {"http.*": 200, "x!": 3}, "segment_size": 16 << 20, "mode": 0o640,
    }
    # Flags not given stay out, so the layer's declared defaults apply.
    assert options.config_from_args(parser.parse_args([]), "ipc") == {}
    assert "--clock" not in _parser("inmemory").format_help()
    assert "--redis-url" in _parser("redis").format_help()
    text = parser.format_help()
    for option in options.options_for("ipc").values():
        assert option.cli_flag is not None and option.cli_flag in text


@pytest.mark.parametrize(("argv", "culprit"), [
    (["--capacity", "0"], "capacity must be an int in 1..4294967295"),
    (["--capacity", "ten"], "not an integer: 'ten'"),
    (["--mode", "4600"], "no setuid"),
    (["--mode", "9"], "not an octal file mode"),
    (["--expiry", "1e30"], "expiry must be a number of seconds > 0 and <= 315360000"),
    (["--segment-size", "2T"], "segment_size must be an int in 0..1099511627776"),
])
def test_bad_command_line_values_name_the_option(argv: list[str], culprit: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="t")
    options.add_arguments(parser, "ipc")
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    assert culprit in capsys.readouterr().err


def test_bad_channel_capacity_rule_on_the_command_line_is_named() -> None:
    args = _parser("ipc").parse_args(["--channel-capacity", "a*=0"])
    with pytest.raises(ValueError, match=re.escape("channel_capacity['a*'] must be an int in 1..")):
        options.config_from_args(args, "ipc")
    with pytest.raises(argparse.ArgumentError, match="expected GLOB=CAPACITY"):
        _parser("ipc").parse_args(["--channel-capacity", "nothing"])


def test_readme_option_table_is_the_declarations() -> None:
    with open(README, encoding="utf-8") as f:
        text = f.read()
    start, end = ".. options-table-start\n\n", "\n.. options-table-end"
    assert start in text and end in text, "README.rst lost its option table markers"
    embedded = text[text.index(start) + len(start):text.index(end)]
    assert embedded == options.render_table(), (
        "README.rst's option table differs from ipc_layer/options.py: paste the output of "
        "`python -m ipc_layer.options` between the markers")


def test_every_declaration_is_complete() -> None:
    seen: set[tuple[str, str]] = set()
    for option in options.OPTIONS:
        assert option.help and option.rule.allowed and option.kinds <= set(options.KINDS)
        # The default itself passes the option's own rule.
        assert option.validate(option.default) == option.default or option.default is None
        for kind in option.kinds:
            assert (kind, option.name) not in seen
            seen.add((kind, option.name))
    assert set(options.accepted("base")) <= set(options.accepted("ipc")) & set(options.accepted("inmemory"))


def test_checks_are_callable_alone() -> None:
    check: Callable[[object], int] = options.CAPACITY.validate
    assert check(3) == 3
    assert options.validate_capacity(2**32 - 1, "channel_capacity['x']") == 2**32 - 1
    with pytest.raises(ValueError, match=re.escape("channel_capacity['x'] must be an int in 1..4294967295")):
        options.validate_capacity(2**32, "channel_capacity['x']")
