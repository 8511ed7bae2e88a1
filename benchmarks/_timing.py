"""Wall-clock helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(fn: Callable[[], object]) -> float:
    """Wall time of one call `fn()`, in seconds."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best(fn: Callable[[], object], repeat: int) -> float:
    """Minimum wall time of `fn()` over `repeat` runs (seconds): on a shared machine other
    processes only ever add time, so the minimum is the least noisy statistic."""
    return min(timed(fn) for _ in range(repeat))
