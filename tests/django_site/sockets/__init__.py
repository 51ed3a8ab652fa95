"""The consumer API's part of the test site: a chat, a JSON socket, a demultiplexed socket with a
bound model, an ordered socket, a background task, a delayed message and a long-poll view.

``chat.py`` is the README's tutorial, line for line; ``routing.channel_routing`` is the
``ROUTING`` the consumer tests give the site (it includes the HTTP side's routes too).
"""
