"""Leaflet, given a prediction layer's options for a scene across 180°, asks for its tiles
on both sides of the antimeridian (with the old, inverted bounds it asked for the wrong ones).

Real Leaflet (the copy the labextension is built with) in real Chromium, without Jupyter:
the options are exactly what the kernel layer syncs (`bounds`, `no_wrap` as `noWrap`), and
the expected tiles are worked out by hand from the view.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from pyproj import Transformer

import ee_model_widgets as emw

LEAFLET = Path(__file__).resolve().parents[2] / "node_modules" / "leaflet" / "dist" / "leaflet.js"
CENTRE, ZOOM, SIZE = (-17.0, 181.0), 7, (800, 600)  # a view centred just east of 180°

RUN = """opts => {
  const map = L.map('m', {center: %s, zoom: %d});
  const asked = [];
  const Grid = L.GridLayer.extend({
    createTile(c) { asked.push([c.z, c.x, c.y]); return document.createElement('img'); },
  });
  new Grid(opts).addTo(map);  // as js/tile_layer.ts builds it: {noWrap: true, ...options}
  return asked;
}"""


def expected_tiles(bounds):
    """Tiles of the view (wrapped x) that overlap the scene's latitudes, by hand."""
    n = 2**ZOOM
    lat, lon = CENTRE
    cx = (lon + 180) / 360 * 256 * n
    cy = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 256 * n
    xs = range(math.floor((cx - SIZE[0] / 2) / 256), math.ceil((cx + SIZE[0] / 2) / 256))
    ys = range(math.floor((cy - SIZE[1] / 2) / 256), math.ceil((cy + SIZE[1] / 2) / 256))
    (south, _), (north, _) = bounds

    def tile_lat(y):
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * y / n))))

    rows = [y for y in ys if tile_lat(y + 1) <= north and tile_lat(y) >= south]
    return {(ZOOM, x % n, y) for x in xs for y in rows}


def test_leaflet_asks_for_the_tiles_on_both_sides_of_180(browser):
    if not LEAFLET.exists():
        pytest.skip("node_modules/leaflet is missing: run `make install-test` (npm ci)")
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32760", always_xy=True)
    x0, y0 = to_utm.transform(177.0, -15.0)
    scene = emw.Image.from_array(
        np.ones((1, 461, 844), "float32"), transform=Affine(1000, 0, x0, 0, -1000, y0), crs="EPSG:32760"
    )
    layer = emw.PredictionLayer(scene)
    try:
        # What get_options() gives the JS view: the synced o=True traits, camelCased.
        opts = {"noWrap": layer.no_wrap, "bounds": layer.bounds}
    finally:
        layer.close()
    page = browser.new_page(viewport={"width": SIZE[0], "height": SIZE[1]})
    try:
        page.set_content(
            f"<body style='margin:0'><div id='m' style='width:{SIZE[0]}px;height:{SIZE[1]}px'></div>"
        )
        page.add_script_tag(path=str(LEAFLET))
        asked = {tuple(t) for t in page.evaluate(RUN % (list(CENTRE), ZOOM), opts)}
    finally:
        page.close()
    expected = expected_tiles(layer.bounds)
    assert asked == expected
    west_of_180 = {x for _, x, _ in asked if x >= 2**ZOOM // 2}
    east_of_180 = {x for _, x, _ in asked if x < 2**ZOOM // 2}
    assert west_of_180 and east_of_180  # 178.6°E..180° and 180°..176.8°W
