"""`emw.Map`: Earth Engine style layers, a layer control, and no network basemap unless reachable."""

from __future__ import annotations

import io
import math
import socket

import ipyleaflet
import numpy as np
import pytest
from PIL import Image as PILImage

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.core.vis import render
from ee_model_widgets.widgets import map as emw_map
from ee_model_widgets.widgets.headless import HeadlessView


def decode(png: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def test_emw_map_is_exported_and_is_an_ipyleaflet_map():
    assert emw.Map is emw_map.Map and issubclass(emw.Map, ipyleaflet.Map)


def test_offline_map_has_no_network_layer_but_a_layer_control():
    m = emw.Map(basemap=None)
    assert m.basemap_layer is None and list(m.layers) == []
    assert any(isinstance(c, ipyleaflet.LayersControl) for c in m.controls)
    # Nothing on the map asks the browser for a URL.
    assert not any(isinstance(lyr, ipyleaflet.TileLayer) for lyr in m.layers)


def test_osm_basemap_when_asked(monkeypatch):
    m = emw.Map(basemap="osm")
    assert isinstance(m.basemap_layer, ipyleaflet.TileLayer) and m.basemap_layer.base
    assert "openstreetmap" in m.basemap_layer.url and m.layers[0] is m.basemap_layer
    with pytest.raises(emw.EEModelWidgetsError, match="Unknown basemap 'stamen'"):
        emw.Map(basemap="stamen")


def test_auto_basemap_follows_the_environment_and_the_reachability_check(monkeypatch):
    monkeypatch.setenv("EE_MODEL_WIDGETS_BASEMAP", "none")
    assert emw.Map().basemap_layer is None
    monkeypatch.setenv("EE_MODEL_WIDGETS_BASEMAP", "auto")
    monkeypatch.setattr(emw_map, "osm_reachable", lambda: False)
    assert emw.Map().basemap_layer is None
    monkeypatch.setattr(emw_map, "osm_reachable", lambda: True)
    assert isinstance(emw.Map().basemap_layer, ipyleaflet.TileLayer)


def test_reachability_check_against_real_sockets():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        assert emw_map.osm_reachable("127.0.0.1", port=port) is True
    finally:
        listener.close()
    # Cached: the same answer without a new connection, even though nobody listens now.
    assert emw_map.osm_reachable("127.0.0.1", port=port) is True
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    assert emw_map.osm_reachable("127.0.0.1", port=free_port) is False
    # A name that cannot resolve is "offline", quickly, not an exception.
    assert emw_map.osm_reachable("no-such-host.invalid", timeout=0.5) is False


def test_add_layer_and_ee_alias_stream_the_image_with_its_vis_params():
    scene = demo.scene()
    pred = demo.model("ndvi").predict_image(scene)
    m = emw.Map(basemap=None)
    a = m.add_layer(scene, demo.VIS_PARAMS["scene"], "scene")
    b = m.addLayer(pred, {"min": 0, "max": 0.3, "palette": "YlGn"}, "ndvi", False, 0.7)
    assert list(m.layers) == [a, b] and isinstance(b, emw.PredictionLayer)
    assert (a.name, b.name, b.visible, b.opacity) == ("scene", "ndvi", False, 0.7)
    c = m.add_layer(pred)  # EE defaults: no vis params, automatic name
    assert c.vis_params == {} and c.name == "Layer 3"
    w, s, e, n = scene.bounds
    z = 15
    x = int((((w + e) / 2) + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians((s + n) / 2))) / math.pi) / 2 * 2**z)
    try:
        (reply,) = HeadlessView(b).fetch([(z, x, y)])
        expected = render(pred.tile(z, x, y), b.vis_params, band_names=pred.band_names)
        assert np.array_equal(decode(reply.png), expected)
        other = ipyleaflet.TileLayer(url="http://127.0.0.1:1/{z}/{x}/{y}.png")
        assert m.add_layer(other) is other and other in m.layers
        with pytest.raises(emw.EEModelWidgetsError, match="takes an emw.Image"):
            m.add_layer(np.zeros((3, 4, 4)))
        m.remove_layer(c)
        assert c not in m.layers
    finally:
        for lyr in (a, b, c):
            lyr.close()


def test_center_object_fits_the_image():
    scene = demo.scene()
    m = emw.Map(basemap=None, layout={"width": "700px", "height": "480px"})
    m.centerObject(scene)
    w, s, e, n = scene.bounds
    assert m.center == pytest.approx([(s + n) / 2, (w + e) / 2])
    # 3 x 2 km at 47.8 S: zoom 14 (~6.4 m/px) fits 700 x 480 px, zoom 15 does not.
    assert m.zoom == 14
    m.center_object((-68.0, -48.0, -67.0, -47.0))
    assert m.zoom == 8  # 1 degree of latitude there is ~540 px at zoom 9, more than 480
    m.setCenter(-67.6, -47.8, 12)
    assert (m.center, m.zoom) == ([-47.8, -67.6], 12)
