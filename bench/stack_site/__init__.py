"""The hello-world Django project every row of ``python -m bench stack`` serves.

One view (:func:`bench.stack_site.views.hello`: ``GET /`` -> 200
``Hello, world!``), no database, DEBUG off, the middleware of a new
``startproject`` that needs no database. The same settings serve every
stack: WSGI (:mod:`bench.stack_site.wsgi`, gunicorn), ASGI
(:mod:`bench.stack_site.asgi`, Daphne 4 and uvicorn) and the channel layer
(``CHANNEL_LAYERS``, ``ipc-server`` + ``runworker``), whose segment prefix
is the run's own (``IPC_BENCH_PREFIX`` in the environment).
"""
