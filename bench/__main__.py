"""``python -m bench``: see :func:`bench.cli.main`."""

from __future__ import annotations

if __name__ == "__main__":
    from bench.cli import main

    raise SystemExit(main())
