"""Fixtures of the client's tests; the test doubles themselves are in ``fakes.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
