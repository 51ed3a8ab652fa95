"""UDP over the channel layer: each datagram is a ``udp.receive`` message; ``{"data": bytes}`` replies go back.

The proof that a new protocol is one small adapter over the same bridge
(the reader, the reply router, the layer): nothing else changes.

Messages::

    udp.receive   {"reply_channel": str, "data": bytes, "client": [host, port], "server": [host, port]}
    reply         {"data": bytes}      (on the reply_channel; any number of them)

One reply channel per client address, kept while the client is active:
it is forgotten ``idle_timeout`` seconds after the client's last datagram
(a reply after that is dropped, like any reply for a gone connection).
A full ``udp.receive`` channel drops the datagram (UDP promises nothing
more), logged and counted; a reply that is not ``{"data": bytes}`` is
logged and dropped.
"""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.protocol import DatagramProtocol

from .context import ServerContext

__all__ = ["LayerUDP", "UDPClient"]

logger = logging.getLogger(__name__)

#: Seconds a client's reply channel lives after its last datagram.
IDLE_TIMEOUT = 60.0


class UDPClient:
    """The reply channel of one client address; replies are written back to it."""

    def __init__(self, owner: LayerUDP, address: tuple[str, int]) -> None:
        self.owner = owner
        self.address = address
        self.reply_channel = owner.context.router.register(self)
        self.expiry: Any = None

    def handle_reply(self, message: dict[str, Any]) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, bytes) or set(message) != {"data"}:
            logger.error("bad udp reply for %s:%s (want {'data': bytes}): %.80r", *self.address, message)
            return
        transport: Any = self.owner.transport  # IUDPTransport (zope: plain mypy misreads it)
        if transport is not None:
            transport.write(data, self.address)

    def touch(self) -> None:
        if self.expiry is not None and self.expiry.active():
            self.expiry.reset(self.owner.idle_timeout)
        else:
            self.expiry = self.owner.context.reactor.callLater(self.owner.idle_timeout, self.forget)

    def forget(self) -> None:
        if self.expiry is not None and self.expiry.active():
            self.expiry.cancel()
        self.expiry = None
        self.owner.context.router.unregister(self.reply_channel)
        self.owner.clients.pop(self.address, None)


class LayerUDP(DatagramProtocol):
    """Datagrams in as ``udp.receive``, replies out to the sender's address."""

    def __init__(self, context: ServerContext, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.context = context
        self.idle_timeout = idle_timeout
        self.clients: dict[tuple[str, int], UDPClient] = {}
        self.dropped = 0

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        client = self.clients.get(addr)
        if client is None:
            client = self.clients[addr] = UDPClient(self, addr)
        client.touch()
        transport: Any = self.transport
        host = transport.getHost()
        message = {"reply_channel": client.reply_channel, "data": datagram, "client": [addr[0], addr[1]],
                   "server": [host.host, host.port]}
        layer = self.context.layer
        try:
            layer.send("udp.receive", message)
        except (layer.ChannelFull, layer.MessageTooLarge) as exc:
            self.dropped += 1
            logger.warning("udp.receive refused a datagram from %s:%s (%s); dropped", addr[0], addr[1],
                           type(exc).__name__)
        except Exception as exc:  # the layer itself failed (a Redis layer with its server down)
            self.dropped += 1
            logger.error("the channel layer failed to take a datagram from %s:%s (%s: %s); dropped",
                         addr[0], addr[1], type(exc).__name__, exc)

    def stopProtocol(self) -> None:
        for client in list(self.clients.values()):
            client.forget()
