"""``ReplyRouter``: reply channel names are unique, unguessable, and cheap to make."""
from __future__ import annotations

import re
import secrets

import pytest

from server.replies import ReplyRouter


class _Handler:
    def __init__(self) -> None:
        self.got: list[dict[str, object]] = []

    def handle_reply(self, message: dict[str, object]) -> None:
        self.got.append(message)


def test_names_carry_a_counter_and_six_random_characters_and_route_replies() -> None:
    router = ReplyRouter("server.abc!")
    handlers = [_Handler() for _ in range(2000)]  # past one pool of random characters
    names = [router.register(handler) for handler in handlers]
    assert len(set(names)) == len(names)
    randoms = []
    for n, name in enumerate(names, start=1):
        match = re.fullmatch(r"server\.abc!([0-9a-f]+?)([A-Za-z0-9_-]{6})", name)
        assert match is not None, name
        assert int(match.group(1), 16) == n
        randoms.append(match.group(2))
    assert len(set(randoms)) > 1990  # 36 random bits each: collisions are vanishingly rare
    router.dispatch(names[1234], {"n": 1})
    assert handlers[1234].got == [{"n": 1}] and not handlers[1233].got


def test_random_characters_are_drawn_in_bulk_not_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: list[int] = []
    real = secrets.token_urlsafe

    def counting(n: int | None = None) -> str:
        draws.append(n or 0)
        return real(n)

    monkeypatch.setattr(secrets, "token_urlsafe", counting)
    router = ReplyRouter("server.abc!")
    for _ in range(1000):
        router.register(_Handler())
    assert 1 <= len(draws) <= 2  # 680 names per draw
