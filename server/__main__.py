"""``python -m server``: the same as ``ipc-server``."""
import sys

from .cli import main

sys.exit(main())
