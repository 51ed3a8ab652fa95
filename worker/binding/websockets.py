"""``WebsocketBinding``: JSON over a demultiplexed WebSocket stream (Channels 1.x's ``channels.binding.websockets``).

Outbound frames are ``{"stream": stream, "payload": {"action", "pk", "data", "model"}}``;
inbound payloads ``{"action", "pk", "data"}`` (put the binding's ``consumer`` in a
``WebsocketDemultiplexer``'s ``consumers``). Only ``websocket.receive`` messages act.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from ..generic.websockets import WebsocketMultiplexer
from .base import Binding

__all__ = ["WebsocketBinding"]


class WebsocketBinding(Binding):
    model: ClassVar[Any] = None  # abstract
    strict_ordering: ClassVar[bool] = False

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict[str, Any]:
        return WebsocketMultiplexer.encode(stream, payload)

    def serialize(self, instance: Any, action: str) -> dict[str, Any]:
        return {"action": action, "pk": instance.pk, "data": self.serialize_data(instance),
                "model": self.model_label()}

    def _field_names(self, instance: Any) -> list[str] | None:
        if self.fields is not None:
            return None if list(self.fields) == ["__all__"] or self.fields == "__all__" else list(self.fields)
        return [f.name for f in instance._meta.get_fields() if f.name not in (self.exclude or ())]

    def serialize_data(self, instance: Any) -> dict[str, Any]:
        from django.core import serializers

        text = serializers.serialize("json", [instance], fields=self._field_names(instance))
        return dict(json.loads(text)[0]["fields"])

    @classmethod
    def get_handler(cls) -> Any:
        handler = super().get_handler()
        if cls.strict_ordering:
            from ..sessions import enforce_ordering

            return enforce_ordering(handler)
        return handler

    @classmethod
    def trigger_inbound(cls, message: Any, **kwargs: Any) -> None:
        if message.channel.name != "websocket.receive":
            return  # connect / disconnect of the socket: nothing to apply
        super().trigger_inbound(message, **kwargs)

    def deserialize(self, message: Any) -> tuple[str, Any, Any]:
        body = json.loads(message["text"])
        if not isinstance(body, dict) or "action" not in body:
            raise ValueError(f"{type(self).__qualname__}: an inbound frame needs an 'action', got {body!r:.100}")
        return body["action"], body.get("pk"), body.get("data")

    def _hydrate(self, pk: Any, data: Any) -> Any:
        from django.core import serializers

        return next(iter(serializers.deserialize("python", [{"pk": pk, "model": self.model_label(),
                                                                "fields": data}])))

    def create(self, data: Any) -> None:
        self._hydrate(None, self._allowed(data)).save()

    def update(self, pk: Any, data: Any) -> None:
        instance = self.model_class().objects.get(pk=pk)
        hydrated = self._hydrate(pk, self._allowed(data))
        for name in self._allowed(data):
            setattr(instance, name, getattr(hydrated.object, name))
        instance.save()

    def _allowed(self, data: Any) -> dict[str, Any]:
        """The fields of ``data`` this binding lets clients write (Channels 1.x wrote any on create)."""
        if not isinstance(data, dict):
            raise ValueError(f"{type(self).__qualname__}: 'data' must be an object, got {type(data).__name__}")
        if self.fields is not None:
            if list(self.fields) == ["__all__"] or self.fields == "__all__":
                return dict(data)
            return {k: v for k, v in data.items() if k in self.fields}
        return {k: v for k, v in data.items() if k not in (self.exclude or ())}
