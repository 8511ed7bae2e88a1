"""notebooks/04_prototype_a_classifier.ipynb runs top to bottom, offline, and shows what it claims."""

from __future__ import annotations

import json
import re

import pytest

from tests.notebook_runner import NOTEBOOKS, WIDGET, errors, execute, outputs_with, stream_text

NOTEBOOK = NOTEBOOKS / "04_prototype_a_classifier.ipynb"


@pytest.mark.slow
def test_prototype_a_classifier_notebook_executes(tmp_path):
    nb = execute(NOTEBOOK, tmp_path)
    assert errors(nb) == []
    text = stream_text(nb, "stdout")
    bands = re.search(r"bands: (\[.*\])", text).group(1)
    assert bands == "['shadow', 'bare', 'bright', 'vegetation', 'classification']"
    v1 = float(re.search(r"v1 accuracy against the reference: (\S+)", text).group(1))
    v2 = float(re.search(r"v2 accuracy against the reference: (\S+)", text).group(1))
    assert 0.5 < v1 < 1 and v2 > v1 + 0.03  # the corrections helped
    added = int(re.search(r"added (\d+) corrections", text).group(1))
    assert 20 <= added <= 40  # up to 10 per class (a class v1 never gets wrong needs none)
    unsure_wrong, unsure_right = map(
        float, re.search(r"wrong: (\S+), where it is right: (\S+)", text).groups()
    )
    assert unsure_wrong > unsure_right  # the uncertainty layer points at the mistakes
    assert "reloaded .keras predicts the same: True" in text
    assert "labels reload exactly: True" in text
    out = tmp_path / "classifier_out"
    assert sorted(p.name for p in out.iterdir()) == [
        "classifier.keras",
        "labels.geojson",
        "prepared",
        "samples.tfrecord.gz",
    ]
    saved = json.loads((out / "labels.geojson").read_text())
    assert len(saved["features"]) == 40 + added and saved["classes"] == [
        "shadow",
        "bare",
        "bright",
        "vegetation",
    ]
    assert "TFRecord samples:" in text
    # The maps and the confusion-matrix plot were shown.
    assert len(outputs_with(nb, WIDGET)) >= 2
    assert outputs_with(nb, "image/png")
