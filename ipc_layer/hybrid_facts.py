"""What a segment records about the hybrid layer using it, and how ``ipc-layer stats`` reads it.

:mod:`ipc_layer.hybrid` writes three sets into its host's segment (set names
with ``':'``, which no group name can contain); this module names them and
reads them back without Redis, so the ``ipc-layer`` command needs no Redis
client:

* ``hybrid:host`` - the host name the segment belongs to (one member);
* ``hybrid:consumers`` - the local normal channels some process received on
  lately (each member expires ``CONSUMER_TTL`` after its last refresh);
* ``hybrid:forwarder`` - ``pid N`` of the process forwarding the host's
  inbox (expires a few seconds after its last loop).

A local channel with messages waiting and no registered consumer is the
misconfiguration the hybrid layer's docs warn about: a channel listed in
``local_channels`` whose consumers run on other hosts (its messages would
wait here until they expire).
"""

from __future__ import annotations

from typing import Any

from _ringbuf import Segment

__all__ = ["CONSUMERS_SET", "FORWARDER_SET", "HOST_SET", "PUMP_PREFIX", "hybrid_report", "is_fact"]

HOST_SET = b"hybrid:host"
CONSUMERS_SET = b"hybrid:consumers"
FORWARDER_SET = b"hybrid:forwarder"
#: The pumps' private doorbell queues in the segment (see :mod:`ipc_layer.hybrid`).
PUMP_PREFIX = "hybrid.pump."
_FACTS = (HOST_SET, CONSUMERS_SET, FORWARDER_SET)


def is_fact(set_name: bytes) -> bool:
    """Whether ``set_name`` is one of the hybrid layer's sets (not a group)."""
    return set_name in _FACTS


def _decoded(seg: Segment, set_name: bytes) -> list[str]:
    return sorted(member.decode("ascii", "replace") for member in seg.set_members(set_name))


def hybrid_report(seg: Segment, channels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The hybrid facts of ``seg`` (None for a segment no hybrid layer uses).

    ``channels`` are :func:`ipc_layer.cli.collect`'s queue rows; the report's
    ``unconsumed`` lists the local normal channels among them that hold
    messages and that no receiver of this host registered.
    """
    hosts = _decoded(seg, HOST_SET)
    if not hosts:
        return None
    consumers = set(_decoded(seg, CONSUMERS_SET))
    unconsumed = [
        row["channel"] for row in channels
        if row["pending"] and "!" not in row["channel"] and "?" not in row["channel"]
        and not row["channel"].startswith(PUMP_PREFIX) and row["channel"] not in consumers
    ]
    return {"hosts": hosts, "forwarders": _decoded(seg, FORWARDER_SET), "consumers": sorted(consumers),
            "unconsumed": unconsumed}
