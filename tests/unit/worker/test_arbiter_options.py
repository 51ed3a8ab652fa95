"""The option table (worker/config.py): every option parses, every bad value is refused naming it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from worker import config
from worker.config import OPTIONS, WorkerOptions, add_arguments, options_from, rst_table

pytestmark = pytest.mark.timeout(30)


class _Refused(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise _Refused(message)


def parse(*argv: str, django: bool = False) -> WorkerOptions:
    parser = _Parser(prog="runworker")
    add_arguments(parser, django=django)
    return options_from(parser.parse_args(list(argv)))


def refused(*argv: str) -> str:
    with pytest.raises(_Refused) as info:
        parse(*argv)
    return str(info.value)


def test_defaults() -> None:
    options = parse()
    assert options == WorkerOptions()
    assert options.workers == config.default_workers() >= 1
    assert (options.threads, options.layer, options.timeout, options.graceful_timeout) == (1, "default", 30.0, 30.0)
    assert (options.only_channels, options.exclude_channels) == ((), ())
    assert (options.max_requests, options.max_requests_jitter, options.pidfile, options.reload) == (0, 0, None, False)
    assert options.verbosity == 1


def test_every_option_parses() -> None:
    options = parse("--workers", "3", "--threads", "4", "--layer", "redis", "--only-channels", "http.*", "ws.*",
                    "--only-channels", "x", "--exclude-channels", "http.request.body?*", "--timeout", "12.5",
                    "--graceful-timeout", "7", "--max-requests", "100", "--max-requests-jitter", "10",
                    "--pidfile", "/run/w.pid", "--reload", "-v", "2")
    assert options == WorkerOptions(workers=3, threads=4, layer="redis", only_channels=("http.*", "ws.*", "x"),
                                    exclude_channels=("http.request.body?*",), timeout=12.5, graceful_timeout=7.0,
                                    max_requests=100, max_requests_jitter=10, pidfile="/run/w.pid", reload=True,
                                    verbosity=2)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (("--workers", "0"), "argument --workers: '0' must be between 1 and 1024"),
        (("--workers", "two"), "argument --workers: 'two' is not a whole number"),
        (("--threads", "0"), "argument --threads: '0' must be between 1 and 1024"),
        (("--threads", "1.5"), "argument --threads: '1.5' is not a whole number"),
        (("--layer", " default"), "argument --layer: ' default' is not a CHANNEL_LAYERS alias"),
        (("--only-channels", "http request"), "argument --only-channels: channel glob 'http request' has "
                                              "characters no channel name holds: ' '"),
        (("--exclude-channels", ""), "argument --exclude-channels: an empty channel glob matches nothing"),
        (("--timeout", "0"), "argument --timeout: '0' must be a finite number of seconds > 0"),
        (("--timeout", "nan"), "argument --timeout: 'nan' must be a finite number of seconds > 0"),
        (("--timeout", "soon"), "argument --timeout: 'soon' is not a number of seconds"),
        (("--graceful-timeout", "-1"), "argument --graceful-timeout: '-1' must be a finite number of seconds > 0"),
        (("--graceful-timeout", "1e12"), "argument --graceful-timeout: '1e12' is more than ten years of seconds"),
        (("--max-requests", "-1"), "argument --max-requests: '-1' must be between 0 and 2147483648"),
        (("--max-requests-jitter", "x"), "argument --max-requests-jitter: 'x' is not a whole number"),
        (("--pidfile", ""), "argument --pidfile: '' is not a file path"),
        (("-v", "4"), "argument -v/--verbosity: '4' is not one of 0, 1, 2, 3"),
        (("--reload", "yes"), "unrecognized arguments: yes"),
    ],
)
def test_each_bad_value_is_refused_naming_the_option(argv: tuple[str, ...], expected: str) -> None:
    assert refused(*argv) == expected


def test_every_option_with_a_value_has_a_refusal_case() -> None:
    # The table above covers each option: a new option needs its own bad-value case.
    cases = test_each_bad_value_is_refused_naming_the_option.pytestmark[0].args[1]  # type: ignore[attr-defined]
    covered = {argv[0] for argv, _ in cases}
    assert covered >= {option.flags[-1] if option.flags[0].startswith("--") else option.flags[0]
                       for option in OPTIONS}


def test_jitter_needs_max_requests() -> None:
    with pytest.raises(ValueError, match="--max-requests-jitter needs --max-requests"):
        parse("--max-requests-jitter", "5")


def test_direct_construction_is_checked_too() -> None:
    with pytest.raises(ValueError, match="--workers: '0' must be between 1 and 1024"):
        WorkerOptions(workers=0)
    with pytest.raises(ValueError, match="--only-channels must be a tuple"):
        WorkerOptions(only_channels="http.*")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--reload must be True or False"):
        WorkerOptions(reload="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--threads must not be a bool"):
        WorkerOptions(threads=True)


def test_django_parser_leaves_verbosity_to_django() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", "--verbosity", type=int, default=1)  # as BaseCommand does
    add_arguments(parser, django=True)  # no clash
    assert options_from(parser.parse_args(["-v", "0", "--workers", "2"])).verbosity == 0


def test_the_rst_table_lists_every_option_and_default() -> None:
    table = rst_table()
    for option in OPTIONS:
        assert f"``{option.flags[0]}" in table
        assert f"     - {option.default_doc}\n" in table
    assert "``--only-channels GLOB ...``" in table


def test_the_readme_holds_the_table_as_the_code_declares_it() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.rst").read_text(encoding="utf-8")
    start, end = ".. runworker-options-start\n\n", "\n.. runworker-options-end"
    assert start in readme and end in readme, "the README lost its runworker option markers"
    documented = readme.split(start, 1)[1].split(end, 1)[0]
    assert documented == rst_table(), "README.rst's runworker table is stale: paste `python -m worker.config`"
