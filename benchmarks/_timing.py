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


def interleaved_best(fns: dict[str, Callable[[], object]], repeat: int) -> tuple[dict, dict]:
    """Best wall and best process-CPU time (seconds) of each `fns[name]()`, the runs interleaved
    (one of each, `repeat` times over) so a burst of load on a shared machine hits every case alike."""
    wall = {name: float("inf") for name in fns}
    cpu = {name: float("inf") for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            c0 = time.process_time()
            wall[name] = min(wall[name], timed(fn))
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return wall, cpu
