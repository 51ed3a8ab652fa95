"""``python -m bench``: :func:`bench.cli.main`; ``python -m bench server``: :func:`bench.server.main`;
``python -m bench stack``: :func:`bench.stack.main`."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        from bench.server import main as server_main

        raise SystemExit(server_main(sys.argv[2:]))
    if sys.argv[1:2] == ["stack"]:
        from bench.stack import main as stack_main

        raise SystemExit(stack_main(sys.argv[2:]))
    from bench.cli import main

    raise SystemExit(main())
