"""The Display tab's threshold: probability >= x in the class colour, the rest transparent.

The panel is driven by setting widget values; tiles come from the threshold layer's real
comm handler (HeadlessView). The reference is an independently built prediction (fresh demo
model, no cache) thresholded in numpy.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image as PILImage

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.widgets.headless import HeadlessView


def tile_at(lon: float, lat: float, z: int) -> tuple[int, int, int]:
    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    return z, x, y


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


@pytest.fixture(scope="module")
def panel():
    p = emw.explore(basemap=None)
    p.view = HeadlessView(p.layer)
    p.threshold_view = HeadlessView(p.threshold.layer)
    p.wait()
    yield p
    p.close()


def test_threshold_shows_the_probability_above_x_in_the_class_colour_without_model_calls(panel):
    scene = demo.scene()
    w, s, e, n = scene.bounds
    tile = tile_at((w + e) / 2, (s + n) / 2, 15)
    panel.band.value = "landcover_3"
    panel.wait()
    assert panel.error == ""
    assert panel.threshold.layer in panel.map.layers and not panel.threshold.layer.visible
    (reply,) = panel.view.fetch([tile])  # the prediction itself: its cells get cached
    assert reply.status == "ok"
    calls = panel.model.stats.calls
    reference = demo.model("landcover").predict_image(scene, cache=None).tile(*tile)
    p3 = np.ma.getdata(reference)[3]
    valid = ~np.ma.getmaskarray(reference)[3]

    shown = {}
    for x in (0.5, 0.8):
        panel.threshold.enabled.value = True
        panel.threshold.value.value = x
        assert panel.threshold.layer.visible
        (reply,) = panel.threshold_view.fetch([tile])
        assert reply.status == "ok", panel.threshold.layer.last_error
        rgba = decode(reply.png)
        want = valid & (p3 >= x)
        assert want.sum() > 500  # the check means something
        opaque = rgba[..., 3] == 255
        assert (opaque != want).mean() < 0.001  # float rounding right at x may flip a few pixels
        assert (rgba[..., 3][~opaque] == 0).all()
        # The class colour of landcover_3 in the demo's class palette.
        assert (rgba[opaque][:, :3] == [0x28, 0xA0, 0x28]).all()
        shown[x] = opaque.sum()
    assert shown[0.8] < shown[0.5]
    assert panel.model.stats.calls == calls  # thresholds reuse the prediction's cells

    panel.threshold.colour.value = "#0000ff"
    (reply,) = panel.threshold_view.fetch([tile])
    rgba = decode(reply.png)
    assert (rgba[rgba[..., 3] == 255][:, :3] == [0, 0, 255]).all()
    panel.threshold.enabled.value = False
    assert not panel.threshold.layer.visible
