"""``Binding``: a model's changes sent to groups (outbound), and group members' edits applied (inbound).

Theory of operation
-------------------
Defining a subclass with a ``model`` (a class or ``"app_label.ModelName"``) connects its
receivers to the model's ``pre_save``/``post_save``/``pre_delete``/``post_delete`` at once,
by Django's lazy model reference, so no app-ready hook is needed (Channels 1.x needed its
app's ``ready()``). ``group_names(instance)`` says which groups see an instance; ``pre_*``
records the groups before the change and ``post_*`` compares: groups that no longer see
it get a ``delete``, groups that still see it an ``update``, new ones a ``create`` (the
Django DDP order Channels 1.x kept). The payload is ``serialize(instance, action)`` and
goes out as a ``Group.send`` (deferred until the consumer returns when the save happens
inside one). Saving in a view or a shell works the same: the group send is immediate there.

Inbound, :meth:`Binding.consumer` (a consumer, typically a demultiplexer stream) reads
``action``/``pk``/``data`` and runs ``create``/``update``/``delete`` only when
``has_permission(user, action, pk)`` says so; the user comes from the channel session
(``channel_session_user = True``, the default).
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..channel import Group

__all__ = ["CREATE", "DELETE", "UPDATE", "Binding"]

CREATE = "create"
UPDATE = "update"
DELETE = "delete"


class Binding:
    """Subclass with ``model``, ``fields`` (or ``exclude``), ``stream``, ``group_names``, ``has_permission``."""

    model: ClassVar[Any] = None
    fields: ClassVar[Any] = None
    exclude: ClassVar[Any] = None
    stream: ClassVar[str | None] = None
    channel_session_user: ClassVar[bool] = True
    channel_session: ClassVar[bool] = False
    #: the keyword arguments of the signal that triggered the current send
    signal_kwargs: dict[str, Any] | None = None
    # set on the instance made for one change (outbound) or one message (inbound)
    instance: Any
    message: Any
    kwargs: dict[str, Any]
    action: str
    pk: Any
    data: Any
    user: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("model", None) is None:
            return  # abstract (WebsocketBinding, or a user's own base)
        if cls.fields is None and cls.exclude is None:
            raise ValueError(f"Binding {cls.__qualname__} must set fields (or ['__all__']) or exclude")
        cls.register()

    # -- registration -------------------------------------------------------------

    @classmethod
    def register(cls) -> None:
        """Connect this binding to its model's save and delete signals (lazily resolved)."""
        from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

        sender = cls.model
        uid = f"worker.binding:{cls.__module__}.{cls.__qualname__}"
        pre_save.connect(cls.pre_save_receiver, sender=sender, weak=False, dispatch_uid=uid + ":pre_save")
        post_save.connect(cls.post_save_receiver, sender=sender, weak=False, dispatch_uid=uid + ":post_save")
        pre_delete.connect(cls.pre_delete_receiver, sender=sender, weak=False, dispatch_uid=uid + ":pre_delete")
        post_delete.connect(cls.post_delete_receiver, sender=sender, weak=False, dispatch_uid=uid + ":post_delete")

    @classmethod
    def model_class(cls) -> Any:
        if isinstance(cls.model, str):
            from django.apps import apps

            return apps.get_model(cls.model)
        return cls.model

    @classmethod
    def model_label(cls) -> str:
        meta = cls.model_class()._meta
        return f"{meta.app_label.lower()}.{meta.object_name.lower()}"

    # -- outbound -----------------------------------------------------------------

    @classmethod
    def pre_save_receiver(cls, instance: Any, **kwargs: Any) -> None:
        cls.pre_change_receiver(instance, CREATE if instance._state.adding else UPDATE)

    @classmethod
    def post_save_receiver(cls, instance: Any, created: bool = False, **kwargs: Any) -> None:
        cls.post_change_receiver(instance, CREATE if created else UPDATE, **kwargs)

    @classmethod
    def pre_delete_receiver(cls, instance: Any, **kwargs: Any) -> None:
        cls.pre_change_receiver(instance, DELETE)

    @classmethod
    def post_delete_receiver(cls, instance: Any, **kwargs: Any) -> None:
        cls.post_change_receiver(instance, DELETE, **kwargs)

    @classmethod
    def pre_change_receiver(cls, instance: Any, action: str) -> None:
        before = set() if action == CREATE else set(cls.group_names(instance))
        instance.__dict__.setdefault("_binding_group_names", {})[cls] = before

    @classmethod
    def post_change_receiver(cls, instance: Any, action: str, **kwargs: Any) -> None:
        before = instance.__dict__.get("_binding_group_names", {}).pop(cls, set())
        after = set() if action == DELETE else set(cls.group_names(instance))
        self = cls()
        self.instance = instance
        self.send_messages(instance, before - after, DELETE, **kwargs)
        self.send_messages(instance, before & after, UPDATE, **kwargs)
        self.send_messages(instance, after - before, CREATE, **kwargs)

    def send_messages(self, instance: Any, group_names: set[str], action: str, **kwargs: Any) -> None:
        if not group_names:
            return
        self.signal_kwargs = kwargs
        payload = self.serialize(instance, action)
        if payload == {}:
            return
        if self.stream is None:
            raise ValueError(f"Binding {type(self).__qualname__} has no stream name")
        message = self.encode(self.stream, payload)
        for name in sorted(group_names):
            Group(name).send(message)

    @classmethod
    def group_names(cls, instance: Any) -> list[str]:
        raise NotImplementedError(f"{cls.__qualname__} must implement group_names(instance)")

    @classmethod
    def encode(cls, stream: str, payload: Any) -> dict[str, Any]:
        raise NotImplementedError(f"{cls.__qualname__} must implement encode(stream, payload)")

    def serialize(self, instance: Any, action: str) -> dict[str, Any]:
        raise NotImplementedError(f"{type(self).__qualname__} must implement serialize(instance, action)")

    # -- inbound --------------------------------------------------------------------

    @classmethod
    def consumer(cls, message: Any, **kwargs: Any) -> None:
        """A consumer applying the message's action (with the decorators the class asks for)."""
        cls.get_handler()(message, **kwargs)

    @classmethod
    def get_handler(cls) -> Any:
        handler = cls.trigger_inbound
        if cls.channel_session_user:
            from ..auth import channel_session_user

            return channel_session_user(handler)
        if cls.channel_session:
            from ..sessions import channel_session

            return channel_session(handler)
        return handler

    @classmethod
    def trigger_inbound(cls, message: Any, **kwargs: Any) -> None:
        from django.contrib.auth.models import AnonymousUser

        self = cls()
        self.message = message
        self.kwargs = kwargs
        self.action, self.pk, self.data = self.deserialize(message)
        self.user = getattr(message, "user", None) or AnonymousUser()
        self.run_action(self.action, self.pk, self.data)

    def deserialize(self, message: Any) -> tuple[str, Any, Any]:
        raise NotImplementedError(f"{type(self).__qualname__} must implement deserialize(message)")

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        raise NotImplementedError(f"{type(self).__qualname__} must implement has_permission(user, action, pk)")

    def run_action(self, action: str, pk: Any, data: Any) -> None:
        if action not in (CREATE, UPDATE, DELETE):
            raise ValueError(f"Binding {type(self).__qualname__}: unknown action {action!r}")
        if not self.has_permission(self.user, action, pk):
            return
        if action == CREATE:
            self.create(data)
        elif action == UPDATE:
            self.update(pk, data)
        else:
            self.delete(pk)

    def create(self, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must implement create(data)")

    def update(self, pk: Any, data: Any) -> None:
        raise NotImplementedError(f"{type(self).__qualname__} must implement update(pk, data)")

    def delete(self, pk: Any) -> None:
        for instance in self.model_class().objects.filter(pk=pk):
            instance.delete()  # one by one: each delete's signals reach the bindings
