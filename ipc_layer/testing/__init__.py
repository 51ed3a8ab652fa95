"""Test support shipped with the package: the layer conformance suite and a manual clock.

Importing this package needs only the standard library (``unittest``), not
pytest and not the C extension.
"""

from __future__ import annotations

from .clock import ManualClock
from .conformance import DEFAULT_LAYER_CONFIG, ConformanceTestCase, conformance_case

__all__ = ["DEFAULT_LAYER_CONFIG", "ConformanceTestCase", "ManualClock", "conformance_case"]
