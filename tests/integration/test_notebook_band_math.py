"""notebooks/06_band_math.ipynb runs top to bottom, offline, and shows what it claims."""

from __future__ import annotations

import re

import pytest

from tests.notebook_runner import NOTEBOOKS, WIDGET, errors, execute, outputs_with, stream_text


@pytest.mark.slow
def test_band_math_notebook_thresholds_ratios_and_a_second_model_on_the_map(tmp_path):
    nb = execute(NOTEBOOKS / "06_band_math.ipynb", tmp_path)
    assert errors(nb) == []
    text = stream_text(nb)
    assert "model calls for the threshold: 0" in text
    share = float(re.search(r"likely vegetation: ([0-9.]+)% of the scene", text)[1])
    assert 1 < share < 90
    assert "same as thresholding the numpy array: True" in text
    assert "['nd'] ['evi']" in text and "NDVI equals numpy: True" in text
    assert (
        "refused: expression: unknown function '__import__'" in text
        and "pwned" not in text.split("refused")[0]
    )
    masked = float(re.search(r"masked as shadow: ([0-9.]+)% of the pixels", text)[1])
    assert 1 < masked < 90
    assert "second model on the derived image == on its numpy result: True" in text
    assert outputs_with(nb, WIDGET)  # the map is displayed as a widget
    assert "oneDNN" not in stream_text(nb, "stderr")
