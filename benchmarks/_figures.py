"""The headline figures of the latest benchmark runs: one file, one source for the README.

Each script calls `record(...)` for the figures it prints; they land in
`benchmarks/figures.json` (committed), and `benchmarks/report.py --write` renders them as the
README's performance table, so the README quotes exactly what the scripts printed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path

FIGURES = Path(__file__).with_name("figures.json")


def machine() -> str:
    """A one-line description of where the figures were measured."""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} cores, Python {platform.python_version()}{load}"


def record(key: str, what: str, measured: str, target: str = "—") -> None:
    """Store figure `key` (e.g. "core_pipeline.a": script and item) of this run.

    `what` says what was measured (and with which script item), `measured` is the figure as
    the script printed it, `target` the goal it is held against ("—" when there is none).
    """
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    figures[key] = {
        "what": what,
        "measured": measured,
        "target": target,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
    }
    tmp = FIGURES.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(figures.items())), indent=1, ensure_ascii=False) + "\n")
    tmp.replace(FIGURES)
