"""What the Python peer scripts share; plain standard library, so any of their virtualenvs runs it.

The scripts are run as ``python bench/peers/<peer>_peer.py`` (so this folder is
on ``sys.path``) and print one JSON object, their metrics, on stdout.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of ``values`` (p in 0..100); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def emit(measure: Callable[[], dict[str, Any]]) -> int:
    """Print what ``measure()`` returns as JSON (exit status 0), or its error on stderr (1)."""
    try:
        result = measure()
    except Exception as exc:  # the runner reports it, with the script's stderr
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
