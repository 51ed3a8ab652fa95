"""Run asgiref 1.1.2's ``ConformanceTestCase`` against ``IPCChannelLayer``.

Meant for a virtualenv holding asgiref 1.1.2 (which conflicts with the
asgiref 3 Django needs), with this repository on ``PYTHONPATH``;
``test_asgiref_conformance.py`` (beside this file) builds that virtualenv
and runs this script. Usage::

    python tests/integration/ipc_layer/asgiref_conformance_runner.py PREFIX

The configuration is the one asgi_ipc and asgi_redis tested with:
``expiry=1, group_expiry=2, capacity=5``. Exit status 0 when every test
passed; the segment of PREFIX is removed afterwards.
"""
from __future__ import annotations

import sys
import unittest


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    prefix = argv[1]

    import asgiref
    from asgiref.conformance import ConformanceTestCase

    import _ringbuf
    from ipc_layer import IPCChannelLayer

    if asgiref.__version__ != "1.1.2":
        print(f"expected asgiref 1.1.2, found {asgiref.__version__} at {asgiref.__file__}", file=sys.stderr)
        return 2

    layer = IPCChannelLayer(prefix=prefix, expiry=1, group_expiry=2, capacity=5, segment_size=16 << 20)

    class IPCLayerConformance(ConformanceTestCase):
        channel_layer = layer
        expiry_delay = 1.1
        capacity_limit = 5

    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(IPCLayerConformance)
        result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run(suite)
    finally:
        layer.close()
        _ringbuf.unlink(prefix, force=True)
    print(f"asgiref {asgiref.__version__} conformance: ran {result.testsRun}, "
          f"failures {len(result.failures)}, errors {len(result.errors)}, skipped {len(result.skipped)}")
    return 0 if result.wasSuccessful() and not result.skipped else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
