"""notebooks/03_tfrecord_roundtrip.ipynb runs top to bottom, offline, and shows what it claims."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import rasterio

from tests.notebook_runner import NOTEBOOKS, WIDGET, execute, outputs_with, stream_text

NOTEBOOK = NOTEBOOKS / "03_tfrecord_roundtrip.ipynb"


@pytest.mark.slow
def test_tfrecord_roundtrip_notebook_executes(tmp_path):
    # The notebook writes into ./tfrecord_out relative to its working directory.
    nb = execute(NOTEBOOK, tmp_path)
    text = stream_text(nb, "stdout")

    diff = float(re.search(r"max \|records route - predict_image\| = (\S+)", text).group(1))
    assert diff < 1e-5
    r2 = float(re.search(r"R2 of the predicted NDVI against the true NDVI: (\S+)", text).group(1))
    assert r2 > 0.8  # the model trained on dataset(...) really learned the target

    out = tmp_path / "tfrecord_out"
    names = sorted(p.name for p in out.iterdir())
    for expected in (
        "training-00000.tfrecord.gz",
        "training-mixer.json",
        "scene-00000.tfrecord.gz",
        "scene-mixer.json",
        "predictions.tfrecord.gz",
        "ndvi_pred.tif",
        "samples.tfrecord.gz",
    ):
        assert expected in names
    mixer = json.loads((out / "scene-mixer.json").read_text())
    assert (mixer["patchDimensions"], mixer["patchesPerRow"], mixer["totalPatches"]) == ([50, 50], 6, 4 * 6)
    with rasterio.open(out / "ndvi_pred.tif") as src:
        assert src.crs.to_epsg() == 32719 and (src.width, src.height) == (300, 200)
        assert src.transform.a == 10 and src.transform.c == mixer["projection"]["affine"]["doubleMatrix"][2]
        values = src.read(1)
    assert np.isfinite(values).all() and 0.0 < float(np.median(values)) < 0.2
    # The map cell produced a widget.
    assert outputs_with(nb, WIDGET)
