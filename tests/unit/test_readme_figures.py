"""The README's performance table is exactly what the benchmark scripts recorded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _report():
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_is_the_rendering_of_figures_json():
    report = _report()
    figures = json.loads((ROOT / "benchmarks" / "figures.json").read_text())
    assert figures, "benchmarks/figures.json is empty: run `make bench`"
    readme = (ROOT / "README.md").read_text()
    assert report.readme_block(readme) == report.block(report.render(figures)), (
        "README.md's performance table differs from benchmarks/figures.json: "
        "run `.venv/bin/python benchmarks/report.py --write`"
    )


def test_every_figure_names_what_it_measured_and_where():
    figures = json.loads((ROOT / "benchmarks" / "figures.json").read_text())
    for key, f in figures.items():
        script = key.partition(".")[0]
        assert (ROOT / "benchmarks" / f"{script}.py").exists(), f"{key}: no benchmarks/{script}.py"
        assert f["what"] and f["measured"] and f["date"] and f["machine"], key
