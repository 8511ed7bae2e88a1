"""The workshop notebooks run top to bottom, offline, and show what they claim.

quickstart.ipynb is one `explore()` cell: after running it, the kernel is asked (one extra
cell, not in the file) whether predictions arrived. 01_models_and_tiling.ipynb prints its
claims (seams only at tile borders, export == to_numpy), which are parsed here.
"""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from tests.notebook_runner import NOTEBOOKS, WIDGET, errors, execute, outputs_with, stream_text


@pytest.mark.slow
def test_quickstart_is_one_explore_cell_that_shows_predictions(tmp_path):
    nb = nbformat.read(NOTEBOOKS / "quickstart.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert len(code) == 1 and code[0].endswith("\nimport ee_model_widgets as emw\n\nemw.explore()"), code
    # The "how to run it" hint is a comment in the code, which Voila hides (it runs the cell itself).
    assert not [c for c in nb.cells if c.cell_type == "markdown" and "Shift" in c.source]
    # One extra cell, run in the same kernel after the notebook: did the predictions come?
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "panel = _\n"
            "panel.wait(180)\n"
            "print('model:', panel.model_picker.value, '| visible:', panel.layer.visible, '| error:', repr(panel.error))\n"
            "print('bands:', panel.display_image.band_names)\n"
            "print('class of the scene centre:', panel.inspect(-67.6431, -47.8541)[f'Prediction: {panel.model_picker.value}'])"
        )
    )
    execute(nb, tmp_path)
    assert errors(nb) == []
    # The panel itself is displayed as a widget, not as text.
    shown = [o for o in nb.cells[1].outputs if o.get("output_type") == "execute_result"]
    assert shown and WIDGET in shown[0]["data"]
    text = stream_text(nb)
    assert "model: landcover | visible: True | error: ''" in text
    assert "landcover_class" in text
    probs = [float(v) for v in re.findall(r"'landcover_\d': ([0-9.e+-]+)", text)]
    assert len(probs) == 4 and abs(sum(probs) - 1) < 1e-3  # softmax probabilities
    # TensorFlow's start-up chatter does not land under the panel.
    stderr = stream_text(nb, "stderr")
    assert "oneDNN" not in stderr and "cuInit" not in stderr


@pytest.mark.slow
def test_models_and_tiling_notebook_shows_seams_fix_input_proj_and_export(tmp_path):
    nb = execute(NOTEBOOKS / "01_models_and_tiling.ipynb", tmp_path)
    assert errors(nb) == []
    text = stream_text(nb)
    assert "retracing" not in text and "oneDNN" not in stream_text(nb, "stderr")  # a workshop shows no noise
    m = re.search(r"(\d+) pixels differ; all within 2 px of a tile border: (\w+)", text)
    assert m and int(m[1]) > 1000 and m[2] == "True"
    diff = float(re.search(r"mean \|difference\| at 30 m: ([0-9.]+) NDVI", text)[1])
    assert diff > 1e-3  # fixInputProj visibly changes a zoomed-out prediction
    assert re.search(r"ndvi_5x5\.tif: \d+ x \d+ px, same values as to_numpy: True", text)
    # Pictures made from real predictions: three matplotlib figures.
    assert len(outputs_with(nb, "image/png")) == 3
    with rasterio.open(tmp_path / "ndvi_5x5.tif") as src:
        assert src.crs.to_epsg() == 32719 and src.descriptions == ("ndvi_5x5",)
        values = src.read(1)
    assert np.isfinite(values).any() and 0.0 < float(np.nanmedian(values)) < 0.2
    # The last cell opened the explorer with the notebook's model selected.
    assert any(WIDGET in o.get("data", {}) for o in nb.cells[-1].outputs)


@pytest.mark.slow
def test_large_areas_notebook_exports_a_cog_on_a_local_cluster(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    # The notebook's SIZE (4096, and 16384 in its text) read from the kernel's environment:
    # 2048 here keeps the test short on a loaded CI machine; the code path is the same.
    monkeypatch.setenv("EMW_LARGE_SIZE", "2048")
    nb = execute(NOTEBOOKS / "05_large_areas.ipynb", tmp_path)
    assert errors(nb) == []
    text = stream_text(nb)
    assert "workers: 2" in text
    assert re.search(r"\('band', 'y', 'x'\) \(1, 2048, 2048\) \| chunks: \(1, 1024, 1024\)", text)
    m = re.search(r"mean smoothed NDVI of the top-left 512 x 512 px: (-?[0-9.]+)", text)
    assert m and -1 <= float(m[1]) <= 1 and float(m[1]) != 0
    assert "layout: COG | overviews: [2, 4, 8]" in text
    assert "a window of the COG has the same values as to_xarray: True" in text
    with rasterio.open(tmp_path / "large_prediction.tif") as ds:
        assert (ds.width, ds.height) == (2048, 2048) and ds.descriptions == ("ndvi_smooth",)
        window = ds.read(1, window=Window(1024, 1024, 256, 256))
    assert np.isfinite(window).all() and window.std() > 0  # a real prediction, not a blank
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large_prediction.tif"]  # no temporaries
