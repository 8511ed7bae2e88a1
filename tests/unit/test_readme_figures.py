"""The README's performance table is exactly what the benchmark scripts recorded."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture(autouse=True)
def _benchmarks_importable(monkeypatch):
    # The scripts import their helpers (`_figures`) from their own folder, as `python script` does.
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("_figures", None)


def _figures(monkeypatch, tmp_path):
    """benchmarks/_figures.py recording into a scratch figures.json."""
    import _figures

    monkeypatch.setattr(_figures, "FIGURES", tmp_path / "figures.json")
    return _figures


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


def test_a_figure_keeps_its_last_runs_and_the_table_states_their_range(monkeypatch, tmp_path):
    figures, report = _figures(monkeypatch, tmp_path), _report()
    for ratio, seconds in [(1.91, "0.22"), (1.83, "0.21"), (2.05, "0.23")]:
        figures.record(
            "prediction_layer.a",
            "Cold viewport / raw model",
            f"{ratio:.2f} ({seconds} s vs 0.11 s)",
            "<= 1.3",
        )
    f = json.loads(figures.FIGURES.read_text())["prediction_layer.a"]
    assert f["measured"] == "2.05 (0.23 s vs 0.11 s)" and len(f["runs"]) == 3
    (row,) = [
        line for line in report.render({"prediction_layer.a": f}).splitlines() if line.startswith("| Cold")
    ]
    assert "| 2.05 (0.23 s vs 0.11 s) | 1.83–2.05 (0.21–0.23 s vs 0.11 s) (3 runs, " in row
    for _ in range(figures.RUNS_KEPT):
        figures.record("prediction_layer.a", "Cold viewport / raw model", "1.50 (0.17 s vs 0.11 s)", "<= 1.3")
    f = json.loads(figures.FIGURES.read_text())["prediction_layer.a"]
    assert report.range_text(f["runs"]) == "1.50 (0.17 s vs 0.11 s)", "only the last RUNS_KEPT runs count"


def test_a_figure_that_reads_differently_starts_a_new_history(monkeypatch, tmp_path):
    figures = _figures(monkeypatch, tmp_path)
    figures.record("codec.a", "Decode, ours / TensorFlow", "3.5x")
    figures.record("codec.a", "Decode, ours / TensorFlow", "decode 3.1x, encode 1.7x")
    assert len(json.loads(figures.FIGURES.read_text())["codec.a"]["runs"]) == 1
    figures.record("codec.a", "Decode and encode, ours / TensorFlow", "decode 3.3x, encode 1.8x")
    assert len(json.loads(figures.FIGURES.read_text())["codec.a"]["runs"]) == 1
    # a number quoted in `what` (e.g. a measured time per tile) does not reset it
    figures.record("serving.a", "REST round trip (5 ms per tile)", "2.09x")
    figures.record("serving.a", "REST round trip (6 ms per tile)", "1.95x")
    assert len(json.loads(figures.FIGURES.read_text())["serving.a"]["runs"]) == 2


def test_compare_says_which_numbers_left_the_recorded_range(monkeypatch, tmp_path):
    figures, report = _figures(monkeypatch, tmp_path), _report()
    figures.record("x.a", "Ratio", "1.80 (0.20 s)")
    figures.record("x.a", "Ratio", "1.90 (0.21 s)")
    figures.record("x.b", "Other", "5.0 ms")
    before = json.loads(figures.FIGURES.read_text())
    figures.record("x.a", "Ratio", "2.09 (0.20 s)")
    lines, within, compared = report.compare(before, json.loads(figures.FIGURES.read_text()))
    assert (within, compared) == (0, 1), "x.b was not run again: not compared"
    assert lines == [
        "x.a: 2.09 (0.20 s)  [2 recorded run(s): 1.80–1.90 (0.20–0.21 s)] -> 2.09 outside 1.80–1.90 (+10%)"
    ]
    figures.record("x.b", "Other", "5.0 ms")
    _, within, compared = report.compare(before, json.loads(figures.FIGURES.read_text()))
    assert (within, compared) == (1, 2)


def test_the_table_counts_the_runs_that_landed_within_the_range_before_them(monkeypatch, tmp_path):
    figures, report = _figures(monkeypatch, tmp_path), _report()
    for measured in ["1.80 (0.20 s)", "1.90 (0.22 s)", "1.85 (0.21 s)", "2.10 (0.21 s)", "1.95 (0.23 s)"]:
        figures.record("x.a", "Ratio", measured)
    runs = json.loads(figures.FIGURES.read_text())["x.a"]["runs"]
    # run 3 lies within runs 1-2; run 4's 2.10 does not; run 5's 0.23 s is above 0.20-0.22 s
    assert report.reproduced(runs) == (1, 3)
    table = report.render(json.loads(figures.FIGURES.read_text()))
    assert "| 1.80–2.10 (0.20–0.23 s) (5 runs, " in table and "| 1 of 3 |" in table
    assert table.endswith(
        "at least two runs of their figure before them, 1 of 3 landed within the range of those runs."
    )
    assert report.reproduced(runs[:2]) == (0, 0)
    assert "| — |" in report.render(
        {"x.a": {**json.loads(figures.FIGURES.read_text())["x.a"], "runs": runs[:2]}}
    )


def test_compare_does_not_hold_a_figure_that_measures_something_else_now_against_its_old_runs(
    monkeypatch, tmp_path
):
    figures, report = _figures(monkeypatch, tmp_path), _report()
    figures.record("x.a", "Layer / raw model in one call", "1.80 (0.20 s)")
    figures.record("x.a", "Layer / raw model in one call", "1.90 (0.21 s)")
    before = json.loads(figures.FIGURES.read_text())
    figures.record("x.a", "Layer / raw model at its fastest", "2.20 (0.23 s)")
    lines, within, compared = report.compare(before, json.loads(figures.FIGURES.read_text()))
    assert (within, compared) == (0, 0)
    assert lines == ["x.a: 2.20 (0.23 s)  (new, or reads differently now: nothing to compare with)"]
