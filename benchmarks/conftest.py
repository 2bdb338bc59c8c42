"""Benchmarks import the reference transcription from tests/ (tests/cntk_reference.py)."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent.parent / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
