"""Tiles coloured in the browser are pixel-identical to the kernel's `core.vis.render`.

A `PredictionLayer` sends each tile's values and the compiled vis params; js/colour.ts colours
them on a canvas. Here a real JupyterLab in a real Chromium shows a layer of known values, and
for each style (palette, gamma, grey, RGB, categorical list and dict, opacity) the canvas pixels
are read back and compared with `render()` of the very arrays the kernel sent. A restyle that
keeps the bands must reach the browser with no tile request at all (the kernel answers none).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from ee_model_widgets.core.vis import render

from .harness import NotebookPage, kernel_tiles, layer_diagnosis, wait_prediction_tiles, write_notebook

CLS = "emw-prediction"
BANDS = ["a", "b", "c", "cls"]
SETUP = """
import json, numpy as np, ipyleaflet
import ee_model_widgets as emw
from affine import Affine
from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD
Z, X0, Y0 = 12, 2000, 1500  # the image is exactly tiles X0..X0+1, Y0..Y0+1 of zoom Z
rng = np.random.default_rng(3)
a = rng.normal(0.5, 0.6, (512, 512))
a[100:160, 200:300] = np.nan  # a masked block: transparent
arr = np.stack([a, rng.random((512, 512)) * 2 - 0.5, rng.random((512, 512)) * 300,
                rng.integers(0, 6, (512, 512))]).astype("float32")
span = 2 * MERCATOR_HALF_WORLD / 2**Z
transform = Affine(span / 256, 0, -MERCATOR_HALF_WORLD + X0 * span, 0, -span / 256, MERCATOR_HALF_WORLD - Y0 * span)
img = emw.Image.from_array(arr, transform=transform, crs="EPSG:3857", band_names=["a", "b", "c", "cls"])
layer = emw.PredictionLayer(img, vis_params={"bands": ["a"], "min": -0.5, "max": 1.5, "palette": "viridis"},
                            class_name="ee-model-tile emw-prediction")
w, s, e, n = img.bounds
m = ipyleaflet.Map(center=((s + n) / 2, (w + e) / 2), zoom=Z, layers=(), layout={"width": "600px", "height": "600px"})
m.add(layer)
m
"""

# (vis params, the kernel needs to send new data: other bands)
STYLES = [
    ({"bands": ["a"], "min": -0.5, "max": 1.5, "palette": "viridis"}, None),
    ({"bands": ["a"], "min": 0, "max": 1, "palette": ["000000", "ff0000", "ffffff"], "gamma": 1.7}, False),
    ({"bands": ["a"], "min": -1, "max": 2, "gamma": 0.6}, False),
    ({"bands": ["a"], "min": 0.2, "max": 0.9, "palette": "RdYlGn"}, False),
    ({"bands": ["b", "c", "a"], "min": [-0.5, 0, -0.5], "max": [1.5, 300, 1.5], "gamma": [1, 1.3, 1]}, True),
    (
        {
            "bands": ["cls"],
            "categorical": True,
            "min": 1,
            "palette": ["ff0000", "00ff00", "0000ff", "ffff00"],
        },
        True,
    ),
    ({"bands": ["cls"], "categorical": True, "palette": {0: "red", 3: "#00f", 5: "00ff00"}}, False),
    ({"bands": ["cls"], "min": 0, "max": 5, "palette": "magma", "opacity": 0.6}, False),
]


def kernel_state(nb: NotebookPage) -> dict:
    out = nb.run_code(
        "print(json.dumps(dict(version=layer._style.get('version'), done=layer.tiles_done, "
        "failed=layer.tiles_failed, err=layer.last_error)))"
    )
    return json.loads(out.strip().splitlines()[-1])


def wait_styled(page, version: int, n: int = 4, timeout: float = 30) -> dict[str, np.ndarray]:
    """The n tiles' canvas pixels once every one of them is coloured with style `version`."""
    end = time.monotonic() + timeout
    while True:
        tiles = kernel_tiles(page, CLS, style=version)
        if len(tiles) >= n:
            return tiles
        if time.monotonic() > end:
            raise AssertionError(
                f"{len(tiles)} of {n} tiles coloured with style {version}; {layer_diagnosis(page, CLS)}"
            )
        page.wait_for_timeout(50)


@pytest.mark.parametrize("app", ["lab"])
def test_browser_colouring_is_pixel_identical_to_render(lab_server, page, app):
    write_notebook(lab_server.root / "colouring.ipynb", [SETUP])
    nb = NotebookPage(page, lab_server, "colouring.ipynb")
    nb.run_all()
    wait_prediction_tiles(page, 4, timeout=60, cls=CLS)
    # Every band of the tiles the kernel serves (the layer reads the shown ones), NaN where masked.
    nb.run_code(
        "from ee_model_widgets.core.grid import xyz_grid\n"
        "for (z, x, y) in [(Z, X0 + i, Y0 + j) for i in (0, 1) for j in (0, 1)]:\n"
        "    a = layer.image.read(xyz_grid(z, x, y))\n"
        "    np.save(f'sent_{z}_{x}_{y}.npy', np.ma.filled(a.astype(np.float32), np.nan))\n"
        "print('saved')"
    )
    sent = {}
    for i in (0, 1):
        for j in (0, 1):
            zxy = f"12/{2000 + i}/{1500 + j}"
            sent[zxy] = np.load(lab_server.root / f"sent_12_{2000 + i}_{1500 + j}.npy")
            assert sent[zxy].shape == (4, 256, 256) and sent[zxy].dtype == np.float32
    assert np.isnan(sent["12/2000/1500"][0]).any()  # the masked block is in the first tile

    for vis, new_data in STYLES:
        before = kernel_state(nb)
        if new_data is not None:
            nb.run_code(f"layer.vis_params = {vis!r}")
        state = kernel_state(nb)
        assert state["failed"] == 0 and not state["err"], state
        tiles = wait_styled(page, state["version"])
        after = kernel_state(nb)
        if new_data is False:
            # Recoloured in the browser from the data it holds: the kernel answered no request.
            assert after["done"] == before["done"], (vis, before, after)
        assert set(tiles) >= set(sent), sorted(tiles)
        for zxy, values in sent.items():
            expected = render(values, vis, band_names=BANDS)
            assert (expected[..., 3] > 0).mean() > 0.3 and expected[..., :3].std() > 10  # a blank tile fails
            shown = tiles[zxy]
            if vis.get("opacity", 1) == 1:
                bad = np.argwhere((shown != expected).any(axis=-1))
                assert bad.size == 0, (
                    vis,
                    zxy,
                    len(bad),
                    bad[:3].tolist(),
                    shown[tuple(bad[0])],
                    expected[tuple(bad[0])],
                )
            else:
                # A canvas stores colours premultiplied by alpha: reading a translucent pixel back
                # may move it by a level or two; its alpha is exact.
                assert np.array_equal(shown[..., 3], expected[..., 3]), (vis, zxy)
                assert np.abs(shown[..., :3].astype(int) - expected[..., :3]).max() <= 2, (vis, zxy)
