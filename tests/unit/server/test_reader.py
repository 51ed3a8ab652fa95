"""TwistedReader: a backlog of replies already on the process channel is taken in a loop, not by recursion."""
import traceback
from typing import Any

from twisted.internet.pollreactor import PollReactor

from server.reader import TwistedReader
from tests.support import make_layer, remove_segment, unique_prefix


def test_backlog_of_replies_is_dispatched_without_recursion() -> None:
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

        reader = TwistedReader(layer, chan, reactor, dispatch)
        reactor.callWhenRunning(reader.start)
        reactor.callLater(10, reactor.stop)
        reactor.run(installSignalHandlers=False)
        print("dispatched", len(got), "max stack depth", max(depth) if depth else None)
        assert len(got) == n, f"only {len(got)} of {n} replies dispatched"
        assert max(depth) < 200, f"stack depth grew to {max(depth)}"
    finally:
        layer.close()
        remove_segment(prefix)
