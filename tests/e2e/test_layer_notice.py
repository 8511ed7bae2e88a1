"""Why a layer's tiles are all empty is said on the map, not left to a blank map.

Real JupyterLab in Chromium: the notice in the map's corner (`js/tile_layer.ts`, the layer's
`notice` trait) for a model that gives nothing but NaN (it appears once the first tiles are
computed) and for an image around the North Pole, beyond the web map's 85.05 degrees (it is
there before the layer is added to the map).
"""

from __future__ import annotations

from .harness import NotebookPage, layer_diagnosis, write_notebook

NAN_MODEL = """
import numpy as np
import ipyleaflet
import ee_model_widgets as emw
from ee_model_widgets import demo

img = demo.scene()
def broken(inputs):  # a model that gives NaN everywhere
    return np.full(inputs["array"].shape[:-1] + (1,), np.nan, np.float32)
model = emw.Model.from_callable(broken, input_tile_size=[64, 64], output_bands={"out": {"type": "float"}})
layer = emw.PredictionLayer(model.predict_image(img.select(["red", "nir"])), vis_params={"min": 0, "max": 1})
w, s, e, n = img.bounds
m = ipyleaflet.Map(center=((s + n) / 2, (w + e) / 2), zoom=14, layers=(),
                   layout={"width": "600px", "height": "400px"})
m.add(layer)
m
"""

POLAR = """
import numpy as np
import ipyleaflet
from affine import Affine
import ee_model_widgets as emw

polar = emw.Image.from_array(np.ones((1, 100, 100), np.float32), crs="EPSG:3413",
                             transform=Affine(1000, 0, -50000, 0, -1000, 50000))
layer = emw.PredictionLayer(polar)
m = ipyleaflet.Map(center=(80, 0), zoom=3, layers=(), layout={"width": "600px", "height": "400px"})
m.add(layer)
m
"""


def run_notebook(server, page, name: str, cell: str) -> NotebookPage:
    write_notebook(server.root / name, [cell])
    nb = NotebookPage(page, server, name)
    nb.run_all()
    return nb


def notice_text(page, timeout_ms: int = 60_000) -> str:
    notice = page.locator(".emw-tile-notice[data-layer*='ee-model-tile'][data-state='layer']")
    try:
        notice.wait_for(timeout=timeout_ms)
    except Exception as exc:  # noqa: BLE001 - say what the map showed instead
        raise AssertionError(f"no layer notice on the map; {layer_diagnosis(page)}") from exc
    return notice.inner_text()


def test_a_model_that_gives_only_nan_is_said_on_the_map(lab_server, page):
    nb = run_notebook(lab_server, page, "nan_model.ipynb", NAN_MODEL)
    text = notice_text(page)
    assert "The model has returned no finite value (only NaN or inf)" in text, text
    assert "check the input bands and their scaling" in text
    # The tiles did come (no error, nothing lost): they are empty, which the notice explains.
    assert page.locator(".ee-model-tile .leaflet-tile[data-status='ok']").count() > 0, layer_diagnosis(page)
    # A model that gives values: the notice goes away.
    nb.run_code(
        "good = emw.Model.from_callable(lambda d: d['array'][..., :1], input_tile_size=[64, 64])\n"
        "layer.image = good.predict_image(img.select(['red', 'nir']))"
    )
    page.locator(".emw-tile-notice[data-state='layer']").wait_for(state="detached", timeout=60_000)


def test_an_image_beyond_the_web_maps_latitudes_is_said_on_the_map(lab_server, page):
    run_notebook(lab_server, page, "polar.ipynb", POLAR)
    text = notice_text(page)
    assert "beyond the 85.05 degrees that a web map (EPSG:3857) can show" in text, text
    assert "to_numpy() or export()" in text
