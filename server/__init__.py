"""The protocol server: HTTP/1.1 and WebSocket connections in, ASGI 1 messages on a channel layer out.

Built in layers (see DESIGN.md, "Message flow"): sans-IO message building
and validation (:mod:`server.headers`, :mod:`server.http_messages`,
:mod:`server.ws_messages`: no Twisted import), thin Twisted/autobahn
adapters over them, and the command line apart. It imports only
``ipc_layer``'s public API, never ``_ringbuf`` or ``worker``.
"""
