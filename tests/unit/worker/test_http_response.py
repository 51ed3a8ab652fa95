"""worker.http_response: responses cut to the layer's message limit, measured with msgpack itself."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.http_response import (
    HeadTooLarge,
    chunk_room,
    head_overhead,
    plain_messages,
    split,
    streaming_messages,
)

pytestmark = pytest.mark.timeout(120)

_HEADERS = st.lists(st.lists(st.binary(min_size=1, max_size=300), min_size=2, max_size=2), max_size=6)


def _size(message: dict[str, object]) -> int:
    return len(msgpack.packb(message, use_bin_type=True))


@settings(max_examples=200, deadline=None)
@given(limit=st.integers(600, 200_000), headers=_HEADERS, content=st.integers(0, 500_000),
       status=st.sampled_from([200, 404, 599]))
def test_plain_messages_fit_and_fill_the_limit(limit: int, headers: list[list[bytes]], content: int,
                                               status: int) -> None:
    if head_overhead(headers) + 64 > limit:
        with pytest.raises(HeadTooLarge):
            list(plain_messages(status, headers, b"x" * content, limit))
        return
    body = bytes(i % 251 for i in range(content))
    messages = list(plain_messages(status, headers, body, limit))
    assert b"".join(m["content"] for m in messages) == body
    assert [m["more_content"] for m in messages] == [True] * (len(messages) - 1) + [False]
    assert messages[0]["status"] == status and messages[0]["headers"] == headers
    assert all("status" not in m for m in messages[1:])
    for message in messages:
        assert _size(message) <= limit
    # Every message but the last is full to within the bytes msgpack may need for headers.
    for message in messages[:-1]:
        assert _size(message) > limit - 80


@settings(max_examples=100, deadline=None)
@given(limit=st.integers(600, 100_000), parts=st.lists(st.integers(0, 250_000), max_size=6))
def test_streaming_messages(limit: int, parts: list[int]) -> None:
    chunks = [bytes([n % 256]) * n for n in parts]
    messages = list(streaming_messages(200, [[b"Content-Type", b"text/plain"]], iter(chunks), limit))
    assert messages[0] == {"status": 200, "headers": [[b"Content-Type", b"text/plain"]], "content": b"",
                           "more_content": True}
    assert messages[-1] == {"content": b"", "more_content": False}
    assert b"".join(m["content"] for m in messages) == b"".join(chunks)
    # One message per part that fits, so a part is sent as soon as it is produced.
    room = chunk_room(limit)
    assert len(messages) == 2 + sum(-(-n // room) for n in parts)
    for message in messages:
        assert _size(message) <= limit


def test_streaming_takes_memoryview_and_bytearray_parts() -> None:
    parts: list[Any] = [memoryview(b"ab"), bytearray(b"cd")]
    messages = list(streaming_messages(200, [], iter(parts), 1000))
    assert [m["content"] for m in messages] == [b"", b"ab", b"cd", b""]


def test_split() -> None:
    assert list(split(b"abcde", 2)) == [b"ab", b"cd", b"e"]
    assert list(split(b"", 2)) == []


def test_head_too_large_names_the_limit() -> None:
    with pytest.raises(HeadTooLarge, match="max_message_size of 1,000"):
        list(plain_messages(200, [[b"x-big", b"v" * 2000]], b"", 1000))
