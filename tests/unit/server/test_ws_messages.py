"""The sans-IO WebSocket message builders and the reply state machine (ASGI 1 www.rst, RFC 6455)."""
from __future__ import annotations

import pytest

from server.ws_messages import (
    Accept,
    BadReply,
    Close,
    OrderCounter,
    Reject,
    ReplyReader,
    Send,
    connect_message,
    disconnect_message,
    receive_message,
    select_subprotocol,
    valid_close_code,
)


def test_messages_carry_the_spec_keys_and_order() -> None:
    order = OrderCounter()
    connect = connect_message(reply_channel="websocket.send!a", path="/ws", query_string=b"x=1",
                              headers=[[b"host", b"h"]], client=["127.0.0.1", 1], server=["127.0.0.1", 2],
                              order=order.take())
    assert connect == {"reply_channel": "websocket.send!a", "scheme": "ws", "path": "/ws",
                       "query_string": b"x=1", "root_path": "", "headers": [[b"host", b"h"]],
                       "client": ["127.0.0.1", 1], "server": ["127.0.0.1", 2], "order": 0}
    assert receive_message("websocket.send!a", "/ws", order.take(), "hi") == {
        "reply_channel": "websocket.send!a", "path": "/ws", "order": 1, "text": "hi"}
    assert receive_message("websocket.send!a", "/ws", order.take(), b"\x00") == {
        "reply_channel": "websocket.send!a", "path": "/ws", "order": 2, "bytes": b"\x00"}
    assert disconnect_message("websocket.send!a", "/ws", order.take(), 1001) == {
        "reply_channel": "websocket.send!a", "path": "/ws", "order": 3, "code": 1001}


def test_subprotocol_is_the_first_offered_that_is_configured() -> None:
    assert select_subprotocol(["a", "b", "c"], ["c", "b"]) == "b"
    assert select_subprotocol(["a"], ["b"]) is None
    assert select_subprotocol([], ["b"]) is None


@pytest.mark.parametrize(
    ("reply", "actions", "state"),
    [
        ({"accept": True}, [Accept()], "OPEN"),
        ({"text": "hi"}, [Accept(), Send(text="hi")], "OPEN"),
        ({"bytes": b"x", "accept": True}, [Accept(), Send(data=b"x")], "OPEN"),
        ({"accept": False}, [Reject()], "CLOSED"),
        ({"close": True}, [Reject()], "CLOSED"),
        ({"accept": True, "close": 4000}, [Accept(), Close(4000)], "OPEN->CLOSED"),
        ({"text": "bye", "close": True}, [Accept(), Send(text="bye"), Close(1000)], "OPEN->CLOSED"),
        ({}, [], "CONNECTING"),
    ],
)
def test_handshake_replies(reply: dict[str, object], actions: list[object], state: str) -> None:
    reader = ReplyReader()
    assert reader.feed(reply) == actions
    assert reader.state == state.split("->")[-1]


def test_open_socket_replies_and_closed_drops() -> None:
    reader = ReplyReader()
    reader.feed({"accept": True})
    assert reader.feed({"accept": True}) == []  # idempotent
    assert reader.feed({"text": "a"}) == [Send(text="a")]
    assert reader.feed({"bytes": b"b"}) == [Send(data=b"b")]
    assert reader.feed({"close": 1000}) == [Close(1000)]
    assert reader.feed({"text": "late"}) == []
    assert reader.state == "CLOSED"


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        ("text", "must be a dict"),
        ({"text": "a", "bytes": b"b"}, "both 'text' and 'bytes'"),
        ({"text": b"a"}, "'text' must be a str"),
        ({"bytes": "a"}, "'bytes' must be bytes"),
        ({"accept": 1}, "'accept' must be a bool"),
        ({"close": "yes"}, "'close' must be True or an int"),
        ({"close": 1005}, "code 1005 is not one an endpoint may send"),
        ({"close": 2000}, "code 2000"),
        ({"text": "a", "order": 1}, "unknown keys"),
    ],
)
def test_bad_replies_name_the_key(reply: object, match: str) -> None:
    with pytest.raises(BadReply, match=match):
        ReplyReader().feed(reply)


def test_close_codes() -> None:
    assert all(valid_close_code(c) for c in (1000, 1001, 1003, 1007, 1011, 1013, 3000, 4999))
    assert not any(valid_close_code(c) for c in (999, 1004, 1005, 1006, 1015, 2999, 5000))
