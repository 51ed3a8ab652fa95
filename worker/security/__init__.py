"""Security checks for consumers (Channels 1.x's ``channels.security``)."""
