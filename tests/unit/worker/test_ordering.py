"""worker.ordering (enforce_ordering): in order, one at a time, no spin, no wedge, across threads."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from tests.unit.worker import consumer_support

consumer_support.setup()

from ipc_layer import InMemoryChannelLayer  # noqa: E402
from worker.dispatch import consume  # noqa: E402
from worker.message import Message  # noqa: E402
from worker.ordering import enforce_ordering, wait_channel_name  # noqa: E402
from worker.sessions import session_for_reply_channel  # noqa: E402

pytestmark = pytest.mark.timeout(120)


class Socket:
    """The messages one socket's server would send, numbered, on an in-memory layer."""

    count = 0

    def __init__(self, layer: Any) -> None:
        Socket.count += 1
        self.layer = layer
        self.reply = f"websocket.send!ord{Socket.count}x{id(self) % 100000}"

    def message(self, order: int, channel: str = "websocket.receive") -> Message:
        return Message({"reply_channel": self.reply, "path": "/", "order": order, "text": str(order)}, channel,
                       self.layer)


def next_on(layer: Any, channel: str = "websocket.receive") -> Message | None:
    name, content = layer.receive([channel])
    return Message(content, name, layer) if name else None


def test_an_early_message_waits_for_its_turn_without_spinning() -> None:
    layer = InMemoryChannelLayer()
    ran: list[int] = []
    consumer = enforce_ordering(lambda m: ran.append(m["order"]))
    s = Socket(layer)
    consume(consumer, s.message(0, "websocket.connect"))
    consume(consumer, s.message(2))  # too early: parked
    consume(consumer, s.message(3))  # parked too
    assert ran == [0]
    assert next_on(layer) is None  # nothing put back on the channel: no spin
    consume(consumer, s.message(1))  # runs, then hands 2 back
    assert ran == [0, 1]
    again = next_on(layer)
    assert again is not None and again["order"] == 2 and "__order_channel" not in again.content
    consume(consumer, again)
    third = next_on(layer)
    assert third is not None
    consume(consumer, third)
    assert ran == [0, 1, 2, 3]
    assert next_on(layer) is None and next_on(layer, wait_channel_name(s.reply)) is None


def test_replies_leave_before_the_successor_is_released() -> None:
    layer = InMemoryChannelLayer()
    s = Socket(layer)

    @enforce_ordering
    def reply(message: Message) -> None:
        message.reply_channel.send({"text": f"r{message['order']}"})  # type: ignore[union-attr]

    consume(reply, s.message(0, "websocket.connect"))
    consume(reply, s.message(2))
    consume(reply, s.message(1))
    # Inside message 1's dispatch its reply was sent before message 2 went back on the channel.
    assert [layer.receive(["websocket.send!"])[1] for _ in range(2)] == [{"text": "r0"}, {"text": "r1"}]
    again = next_on(layer)
    assert again is not None
    consume(reply, again)
    assert layer.receive(["websocket.send!"])[1] == {"text": "r2"}


def test_a_failing_consumer_does_not_wedge_the_socket() -> None:
    layer = InMemoryChannelLayer()
    s = Socket(layer)
    ran: list[int] = []

    @enforce_ordering
    def flaky(message: Message) -> None:
        ran.append(message["order"])
        if message["order"] == 1:
            raise RuntimeError("boom")

    consume(flaky, s.message(0, "websocket.connect"))
    with pytest.raises(RuntimeError):
        consume(flaky, s.message(1))
    consume(flaky, s.message(2))
    assert ran == [0, 1, 2]


def test_a_lost_message_is_skipped_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    layer = InMemoryChannelLayer()
    s = Socket(layer)
    ran: list[int] = []
    patient = enforce_ordering(lambda m: ran.append(m["order"]))
    impatient = enforce_ordering(timeout=0.0)(lambda m: ran.append(m["order"]))
    consume(patient, s.message(0, "websocket.connect"))
    consume(patient, s.message(2))  # 1 is lost; 2 waits (5 s timeout: no skip yet)
    assert next_on(layer) is None and ran == [0]
    consume(impatient, s.message(3))  # a later arrival finds the gap old enough: 2 goes on
    skipped = next_on(layer)
    assert skipped is not None and skipped["order"] == 2
    assert "message(s) 1..1 never ran" in caplog.text and s.reply in caplog.text
    consume(patient, skipped)
    assert ran == [0, 2]
    third = next_on(layer)
    assert third is not None and third["order"] == 3
    consume(patient, third)
    assert ran == [0, 2, 3]
    with caplog.at_level(logging.WARNING):
        consume(patient, s.message(1))  # the lost one turns up late: dropped, named
    assert ran == [0, 2, 3] and "dropped message 1" in caplog.text


def test_the_disconnect_deletes_the_session_only_when_it_ran() -> None:
    layer = InMemoryChannelLayer()
    s = Socket(layer)
    consumer = enforce_ordering(lambda m: None)
    consume(consumer, s.message(0, "websocket.connect"))
    key = session_for_reply_channel(s.reply).session_key
    consume(consumer, s.message(2, "websocket.disconnect"))  # early: parked, the session stays
    assert session_for_reply_channel(s.reply).exists(key)
    consume(consumer, s.message(1))
    again = next_on(layer, "websocket.disconnect")
    assert again is not None
    consume(consumer, again)
    assert not session_for_reply_channel(s.reply).exists(key)


def test_bad_uses_are_named() -> None:
    with pytest.raises(ValueError, match="slight=True"):
        enforce_ordering(slight=True)
    consumer = enforce_ordering(lambda m: None)
    with pytest.raises(ValueError, match="no integer 'order'"):
        consume(consumer, Message({"reply_channel": "websocket.send!z"}, "websocket.receive", InMemoryChannelLayer()))


def test_four_threads_run_one_socket_in_order_one_at_a_time() -> None:
    layer = InMemoryChannelLayer(capacity=10_000)
    sockets = [Socket(layer) for _ in range(3)]
    ran: dict[str, list[int]] = {s.reply: [] for s in sockets}
    busy: dict[str, int] = {s.reply: 0 for s in sockets}
    overlaps: list[str] = []
    guard = threading.Lock()
    total = 150

    @enforce_ordering
    def record(message: Message) -> None:
        reply = message.reply_channel.name  # type: ignore[union-attr]
        with guard:
            busy[reply] += 1
            if busy[reply] > 1:
                overlaps.append(reply)
        ran[reply].append(message["order"])
        with guard:
            busy[reply] -= 1

    for s in sockets:
        layer.send("websocket.connect", s.message(0, "websocket.connect").content)
    for order in range(1, total + 1):
        for s in sockets:
            layer.send("websocket.receive", s.message(order).content)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while True:
                name, content = layer.receive(["websocket.connect", "websocket.receive"], block=True)
                if name is None or content is None:
                    return  # idle for blocking_timeout: the run is over
                consume(record, Message(content, name, layer))
                if all(len(v) == total + 1 for v in ran.values()):
                    return
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    layer.blocking_timeout = 2.0
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not errors
    assert not overlaps
    for s in sockets:
        assert ran[s.reply] == list(range(total + 1))


def test_a_message_held_by_another_drain_is_not_lost() -> None:
    # The race the live 4-worker test found: a drainer holds the parked message k while the
    # runner of k - 1 stores next = k and drains (finding nothing); the drainer parks k again.
    # It must then see next = k and go round, or the socket waits for ever.
    from worker import ordering
    from worker.sessions import session_for_reply_channel as load

    layer = InMemoryChannelLayer()
    s = Socket(layer)
    ran: list[int] = []
    consumer = enforce_ordering(lambda m: ran.append(m["order"]))
    consume(consumer, s.message(0, "websocket.connect"))
    consume(consumer, s.message(2))  # parked; next is 1
    wait = wait_channel_name(s.reply)

    class RunnerFinishesMeanwhile:
        """The layer, except that re-parking the held message first lets message 1 run."""

        def __init__(self) -> None:
            self.fired = False

        def __getattr__(self, name: str) -> Any:
            return getattr(layer, name)

        def send(self, channel: str, content: dict[str, Any]) -> None:
            if channel == wait and not self.fired:
                self.fired = True
                consume(consumer, s.message(1))  # stores next = 2, drains an empty wait channel
            layer.send(channel, content)

    holder = Message(s.message(3).content, "websocket.receive", RunnerFinishesMeanwhile())
    ordering._drain(holder, load(s.reply), 1, None, 5.0)  # a stale drain for next = 1
    assert ran == [0, 1]
    again = next_on(layer)
    assert again is not None and again["order"] == 2, "message 2 stayed parked: the socket is wedged"
