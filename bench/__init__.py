"""Benchmarks: this project's channel layers against Redis, measured in one run.

``python -m bench --help`` (or the ``ipc-bench`` console script) runs every scenario
against every available layer and writes a markdown table, JSON lines and PNG plots.

Modules, one job each:

- :mod:`bench.cli`          -- the command line; orchestrates one run.
- :mod:`bench.settings`     -- run settings (quick / default presets, scaling).
- :mod:`bench.drivers`      -- one synchronous driver interface over every layer.
- :mod:`bench.scenarios`    -- what each scenario runs in each process, and its summary.
- :mod:`bench.runner`       -- child processes, pinning, barriers, hard time bounds.
- :mod:`bench.redis_server` -- a private ``redis-server`` on a free loopback port.
- :mod:`bench.messages`     -- ASGI-shaped payloads of a given encoded size.
- :mod:`bench.stats`        -- percentiles and medians.
- :mod:`bench.machine`      -- the machine record (CPU, kernel, versions).
- :mod:`bench.report`       -- markdown tables, ratios, JSON lines.
- :mod:`bench.plots`        -- matplotlib (Agg) figures.
- :mod:`bench.procs`        -- the HTTP benches' processes: start pinned, wait, stop, CPU time.
- :mod:`bench.wrk`          -- ``wrk`` as the HTTP load generator, its report parsed.

``python -m bench server`` (:mod:`bench.server`, :mod:`bench.server_apps`) measures the
protocol server; ``python -m bench stack`` (:mod:`bench.stack`, :mod:`bench.stack_report`,
:mod:`bench.stack_profile`, the Django project :mod:`bench.stack_site`) the whole stack
against gunicorn, Daphne 4 and uvicorn.

``python -m bench.core`` (:mod:`bench.core`, kept with the ``_ringbuf`` core) prints the
raw core's own figures; ``python -m bench`` compares layers.
"""
