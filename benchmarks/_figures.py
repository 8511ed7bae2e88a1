"""The headline figures of the latest benchmark runs: one file, one source for the README.

Each script calls `record(...)` for the figures it prints; they land in
`benchmarks/figures.json` (committed), and `benchmarks/report.py --write` renders them as the
README's performance table, so the README quotes exactly what the scripts printed.

A figure also keeps the figures of its last `RUNS_KEPT` runs (`runs`), so the table can state
the range a new run of `make bench` should land in, and `report.py --compare` can say whether
it did. A run joins that history only while the figure reads the same way (the same text
around the numbers of `what` and `measured`; `what` may quote a measured time): a figure that
changes what it prints starts a new history.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

FIGURES = Path(__file__).with_name("figures.json")
#: Runs of a figure kept as its history (the range the README states is theirs).
RUNS_KEPT = 5
# A number as the scripts print them: 1.83, 0.0, 2048; signs and exponents are not used.
NUMBER = re.compile(r"\d+(?:\.\d+)?")


def machine() -> str:
    """A one-line description of where the figures were measured."""
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return f"{os.cpu_count()} cores, Python {platform.python_version()}{load}"


def shape(measured: str) -> str:
    """`measured` with its numbers blanked out: two runs of one figure read alike when equal."""
    return NUMBER.sub("#", measured)


def record(key: str, what: str, measured: str, target: str = "—") -> None:
    """Store figure `key` (e.g. "core_pipeline.a": script and item) of this run.

    `what` says what was measured (and with which script item), `measured` is the figure as
    the script printed it, `target` the goal it is held against ("—" when there is none).
    """
    figures = json.loads(FIGURES.read_text()) if FIGURES.exists() else {}
    now = datetime.datetime.now()
    run = {
        "measured": measured,
        "date": now.date().isoformat(),
        "machine": machine(),
        "time": now.isoformat(),  # tells two runs of one day apart
    }
    old = figures.get(key, {})
    runs = [r for r in old.get("runs", []) if shape(r["measured"]) == shape(measured)]
    if shape(old.get("what", "")) != shape(what):
        runs = []  # it measures something else now: earlier runs say nothing about it
    latest = {k: run[k] for k in ("measured", "date", "machine")}
    figures[key] = {"what": what, "target": target, **latest, "runs": (runs + [run])[-RUNS_KEPT:]}
    tmp = FIGURES.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dict(sorted(figures.items())), indent=1, ensure_ascii=False) + "\n")
    tmp.replace(FIGURES)
