"""The test Django project every worker test runs: settings from the environment, views for each HTTP case.

Theory of operation
-------------------
The worker processes a test starts (``runworker`` through ``tests/worker_support.py``, or a
receive loop in the test process) import ``tests.django_site.settings``; the test chooses
the channel layer and everything else that must differ between tests through environment
variables, so one settings module serves every test, on shared memory and on Redis:

=========================  ===========================================================
variable                   meaning (default)
=========================  ===========================================================
``IPC_TEST_LAYER_BACKEND`` dotted path of the layer class (``ipc_layer.IPCChannelLayer``)
``IPC_TEST_PREFIX``        the layer's ``prefix``: segment prefix, or Redis key prefix
``IPC_TEST_REDIS_URL``     the Redis layer's ``url`` (only for a Redis backend)
``IPC_TEST_LAYER_CONFIG``  JSON object of further ``CONFIG`` keys (merged last)
``IPC_TEST_ROUTING``       ``ROUTING`` dotted path (``tests.django_site.routing.channel_routing``;
                           empty: no ``ROUTING`` key, only the default consumers)
``IPC_TEST_STATE_DIR``     directory of the SQLite database and the session files
                           (a temp directory named after the prefix)
``IPC_TEST_DEBUG``         ``1``: ``DEBUG = True`` (technical 500 pages)
=========================  ===========================================================

:func:`tests.django_site.environment.site_environment` builds that environment (plus
``DJANGO_SETTINGS_MODULE`` and ``PYTHONPATH``) for a subprocess; its ``migrate`` creates
the database tables for tests that need them (sessions are file-based and need none).

Other worker helpers add their own views and consumers here (``urls.py``, ``routing.py``).
"""
