"""The readers: a backlog of replies is taken in a loop, not by recursion; ``auto`` picks the fastest way."""
import traceback
from typing import Any

import pytest
from twisted.internet.pollreactor import PollReactor
from twisted.internet.testing import MemoryReactorClock

from ipc_layer import InMemoryChannelLayer
from server.reader import ERROR_PAUSE, StreamReader, ThreadReader, TwistedReader, make_reader
from tests.support import make_layer, remove_segment, unique_prefix

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("reader_class", [TwistedReader, StreamReader])
def test_backlog_of_replies_is_dispatched_without_recursion(reader_class: Any) -> None:
    prefix = unique_prefix()
    layer = make_layer(prefix, capacity=5000)
    try:
        chan = layer.new_process_channel("server")
        n = 1500
        for i in range(n):
            layer.send(chan + f"c{i}", {"i": i})
        reactor = PollReactor()
        got: list[int] = []
        depth: list[int] = []

        def dispatch(channel: str, message: dict[str, Any]) -> None:
            got.append(message["i"])
            depth.append(len(traceback.extract_stack()))
            if len(got) == n:
                reactor.stop()

        reader = reader_class(layer, chan, reactor, dispatch)
        reactor.callWhenRunning(reader.start)
        reactor.callLater(10, reactor.stop)
        reactor.run(installSignalHandlers=False)
        reader.stop()
        print("dispatched", len(got), "max stack depth", max(depth) if depth else None)
        assert got == list(range(n)), f"{len(got)} of {n} replies dispatched, or out of order"
        assert max(depth) < 200, f"stack depth grew to {max(depth)}"
    finally:
        layer.close()
        remove_segment(prefix)


def test_auto_picks_the_stream_then_the_twisted_extension_then_a_thread() -> None:
    prefix = unique_prefix()
    shm = make_layer(prefix)
    try:
        reactor = PollReactor()
        assert isinstance(make_reader(shm, "s.x!", reactor, print), StreamReader)
        assert isinstance(make_reader(shm, "s.x!", reactor, print, "twisted"), TwistedReader)
        assert isinstance(make_reader(shm, "s.x!", reactor, print, "thread"), ThreadReader)
        memory = InMemoryChannelLayer()  # twisted, not twisted_stream
        assert isinstance(make_reader(memory, "s.x!", reactor, print), TwistedReader)
        with pytest.raises(ValueError, match="'twisted_stream' extension"):
            make_reader(memory, "s.x!", reactor, print, "stream")
        with pytest.raises(ValueError, match="must be one of 'auto', 'stream', 'twisted', 'thread'"):
            make_reader(memory, "s.x!", reactor, print, "poll")
    finally:
        shm.close()
        remove_segment(prefix)


class _FakeStream:
    def __init__(self) -> None:
        self.resumed = 0
        self.stopped = False

    def resume(self) -> None:
        self.resumed += 1

    def stop(self) -> None:
        self.stopped = True


class _StreamLayer:
    """A layer whose stream the test fails by hand."""

    extensions = ("twisted_stream",)

    def __init__(self) -> None:
        self.stream = _FakeStream()
        self.on_error: Any = None

    def receive_twisted_stream(self, channels: list[str], on_message: Any, on_error: Any, reactor: Any) -> Any:
        self.on_error = on_error
        return self.stream


def test_stream_reader_resumes_after_a_layer_error_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    layer = _StreamLayer()
    clock = MemoryReactorClock()
    reader = StreamReader(layer, "s.err!", clock, print)
    reader.start()
    layer.on_error(RuntimeError("segment trouble"))
    assert "segment trouble" in caplog.text
    clock.advance(ERROR_PAUSE / 2)
    assert layer.stream.resumed == 0  # a pause first: a broken layer is not hammered
    clock.advance(ERROR_PAUSE)
    assert layer.stream.resumed == 1
    layer.on_error(RuntimeError("again"))
    reader.stop()
    clock.advance(ERROR_PAUSE * 2)
    assert layer.stream.resumed == 1 and layer.stream.stopped  # no resume after stop
