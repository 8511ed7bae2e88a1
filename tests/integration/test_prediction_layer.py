"""The prediction layer in the kernel: batched, cached, visible errors, the zoom-out guard.

The browser end of the comm is replaced by a recorder; everything else is real: real
predicted images, real model calls, real PNGs.
"""

from __future__ import annotations

import io
import math
import threading
import warnings

import numpy as np
import pytest
from affine import Affine
from PIL import Image as PILImage

import ee_model_widgets as emw
from ee_model_widgets.core.grid import xyz_grid
from ee_model_widgets.core.vis import render
from ee_model_widgets.widgets.headless import HeadlessView

VIS = {"min": -1, "max": 1, "palette": "viridis"}


def lonlat_to_tile(lon, lat, z):
    n = 2**z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return x, y


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    arr = rng.random((2, 400, 400)).astype("float32")
    return emw.Image.from_array(
        arr, transform=Affine(10, 0, 500000, 0, -10, 4000000), crs="EPSG:32633", band_names=["red", "nir"]
    )


def diff_model(**kw):
    def fn(inputs):
        a = inputs["array"]
        return a[..., 1:2] - a[..., 0:1]

    return emw.Model.from_callable(
        fn, input_tile_size=[64, 64], output_bands={"diff": {"type": "float"}}, **kw
    )


def center_tiles(image, z, n=4):
    w, s, e, nn = image.bounds
    x, y = lonlat_to_tile((w + e) / 2, (s + nn) / 2, z)
    return [(z, x + dx, y + dy) for dx, dy in [(0, 0), (1, 0), (0, 1), (1, 1)][:n]]


@pytest.fixture
def make_layer():
    layers = []

    def make(image, **kw):
        layer = emw.PredictionLayer(image, vis_params=kw.pop("vis_params", VIS), **kw)
        layers.append(layer)
        return layer, HeadlessView(layer)

    yield make
    for layer in layers:
        layer.close()


def decode(png):
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def test_tiles_are_the_rendered_predictions(scene, make_layer):
    pred = diff_model().predict_image(scene)
    layer, view = make_layer(pred)
    tiles = center_tiles(scene, 14)
    replies = view.fetch(tiles)
    for (z, x, y), reply in zip(tiles, replies):
        assert reply.status == "ok"
        expected = render(pred.tile(z, x, y), VIS, band_names=pred.band_names)
        assert np.array_equal(decode(reply.png), expected)
    assert layer.tiles_done == len(tiles) and layer.last_error == ""
    # Leaflet is told the image's extent, so it asks for no tile outside it.
    w, s, e, n = scene.bounds
    assert layer.bounds == [[s, w], [n, e]]


def test_tiles_that_arrive_together_share_one_model_call(scene, make_layer):
    model = diff_model(max_batch_size=None)  # no chunking: one call per batch of tiles
    pred = model.predict_image(scene, cache=None)
    gate = threading.Event()
    layer, view = make_layer(pred, workers=1, batch_size=8, batch_seconds=None)  # fixed batches
    # Hold the worker on a first tile so that the next four queue up together.
    original = layer._render_many
    layer.scheduler._render_many = lambda reqs: (gate.wait(10), original(reqs))[1]
    first = view.request(12, 0, 0)
    ids = [view.request(*t) for t in center_tiles(scene, 15)]
    gate.set()
    view.wait([first, *ids])
    # The holding tile lies outside the image (no cells, no call); the 4 tiles that queued
    # behind it need 4 x 16 cells of 64 px, computed in ONE model call.
    assert model.stats.calls == 1
    assert model.stats.instances == 64


def test_new_palette_recolours_loaded_tiles_without_any_kernel_request(scene, make_layer):
    model = diff_model()
    pred = model.predict_image(scene, cache=None)
    layer, view = make_layer(pred)
    tiles = center_tiles(scene, 14)
    first = view.fetch(tiles)
    before = first[0].rgba.copy()
    calls, answered = model.stats.calls, len(view.messages("tile_response"))
    assert calls > 0 and all(r.kind == "data" for r in first)
    layer.vis_params = {"min": -1, "max": 1, "palette": ["000000", "ff0000"]}
    # Only the style travels: no redraw, no tile re-sent, no model call; the view recolours
    # the tiles it holds, and they show the new palette exactly as render() draws it.
    assert view.messages("redraw") == [] and len(view.messages("tile_response")) == answered
    assert model.stats.calls == calls
    assert view.style["kind"] == "palette" and len(view.style["table"]) == 4097 * 4
    after = first[0].rgba
    assert not np.array_equal(before, after)
    expected = render(pred.tile(*tiles[0]), layer.vis_params, band_names=pred.band_names)
    assert np.array_equal(after, expected)
    assert (after[..., 0] > 0).mean() > 0.2 and (after[..., 1] == 0).all()  # black..red, not blank


def test_new_bands_are_asked_for_again_and_served_from_the_cells_without_a_model_call(scene, make_layer):
    model = emw.Model.from_callable(
        lambda inputs: {"red2": inputs["array"][..., 0:1] * 2, "nir2": inputs["array"][..., 1:2] * 2},
        input_tile_size=[64, 64],
        output_bands={"red2": {"type": "float"}, "nir2": {"type": "float"}},
    )
    pred = model.predict_image(scene)  # its cells are cached with both bands
    layer, view = make_layer(pred, vis_params={"bands": ["red2"], "min": 0, "max": 2})
    tiles = center_tiles(scene, 14)
    first = view.fetch(tiles)
    assert first[0].values.shape == (1, 256, 256)  # only the shown band is read and sent
    calls = model.stats.calls
    layer.vis_params = {"bands": ["nir2"], "min": 0, "max": 2, "palette": "magma"}
    assert len(view.messages("redraw")) == 1  # other data: the browser asks again
    second = view.fetch(tiles)
    assert model.stats.calls == calls  # assembled from the cached cells, the model not run again
    expected = render(scene.tile(*tiles[0]) * 2, layer.vis_params, band_names=["red2", "nir2"])
    assert np.array_equal(second[0].rgba, expected)
    assert (expected[..., 3] > 0).mean() > 0.5  # a blank tile would fail
    layer.vis_params = {"bands": ["red2"], "min": 0, "max": 2}
    view.fetch(tiles)
    assert layer.cache_hits == len(tiles)  # back to the first band: the layer's own tile cache
    # Invalid vis params: every tile says why (an error tile), and a fix brings data back.
    layer.vis_params = {"bands": ["nir2"], "palette": "no-such-map"}
    (bad,) = view.fetch(tiles[:1])
    assert bad.status == "error" and bad.kind == "png" and "no-such-map" in layer.last_error
    assert layer._style == {}
    layer.vis_params = {"bands": ["nir2"], "min": 0, "max": 2}
    (good,) = view.fetch(tiles[:1])
    assert good.kind == "data" and view.style["kind"] == "grey"


def test_a_view_that_lost_its_style_asks_again_and_gets_the_current_one(scene, make_layer):
    layer, view = make_layer(scene, vis_params={"bands": ["red"], "min": 0, "max": 1, "palette": "magma"})
    view.style = {}  # as if the update carrying the style never reached this view
    (tile,) = center_tiles(scene, 14, n=1)
    (reply,) = view.fetch([tile])
    with pytest.raises(RuntimeError, match="sent no style"):
        reply.rgba  # noqa: B018 - a data tile without its style cannot be drawn
    view.say({"type": "style_sync"})  # what js/tile_layer.ts sends when tiles wait too long
    assert view.style["version"] == layer._style["version"] and view.style["kind"] == "palette"
    expected = render(scene.tile(*tile), layer.vis_params, band_names=scene.band_names)
    assert np.array_equal(reply.rgba, expected) and (expected[..., 3] > 0).mean() > 0.5


def test_a_failing_model_gives_error_tiles_and_last_error(scene, make_layer):
    def broken(inputs):
        raise RuntimeError("weights file is corrupt")

    model = emw.Model.from_callable(broken, input_tile_size=[64, 64], output_bands={"x": {"type": "float"}})
    layer, view = make_layer(model.predict_image(scene, cache=None))
    replies = view.fetch(center_tiles(scene, 14))
    assert all(r.status == "error" for r in replies)
    assert all(decode(r.png).shape == (256, 256, 4) for r in replies)
    assert "weights file is corrupt" in layer.last_error
    assert layer.tiles_failed == 4
    # Swapping in a working model in place: the same layer serves good tiles again.
    layer.image = diff_model().predict_image(scene)
    assert all(r.status == "ok" for r in view.fetch(center_tiles(scene, 14)))


def test_each_tile_is_planned_once_and_the_read_reuses_the_plan(scene, make_layer, monkeypatch):
    """One plan per tile serves both the zoom-out decision and the read (issue 16.3)."""
    from ee_model_widgets.core.predicted import PredictedImage

    planned = []
    make_plan = PredictedImage._make_plan

    def counting(self, grid, bands, resampling):
        planned.append(grid)
        return make_plan(self, grid, bands, resampling)

    monkeypatch.setattr(PredictedImage, "_make_plan", counting)
    model = diff_model(fix_input_proj=True)
    pred = model.predict_image(scene, cache=None)
    layer, view = make_layer(pred, max_cells_per_tile=64, batch_size=4)
    tiles = center_tiles(scene, 16)
    replies = view.fetch(tiles)
    assert all(r.status == "ok" for r in replies)
    assert model.stats.calls > 0 and layer.tiles_zoom_in == 0
    # Each tile's grid planned exactly once (before: once for the zoom-out check, once to read).
    assert sorted(planned, key=repr) == sorted((xyz_grid(*t) for t in tiles), key=repr)
    # Reading a plan plans nothing again, and gives what a plain read gives.
    grids = [xyz_grid(*t) for t in tiles]
    plan = pred.plan(grids)
    planned.clear()
    arrays = pred.read_plan(plan)
    assert planned == []
    for g, a in zip(grids, arrays):
        np.testing.assert_array_equal(a.filled(np.nan), pred.read(g).filled(np.nan))


def test_fix_input_proj_zoomed_out_answers_zoom_in_without_model_calls(scene, make_layer):
    model = diff_model(fix_input_proj=True)
    pred = model.predict_image(scene, cache=None)
    layer, view = make_layer(pred, max_cells_per_tile=4)
    # At zoom 12 one tile covers the whole 4 km scene: 7x7 = 49 native 64 px cells.
    (tile,) = center_tiles(scene, 12, n=1)
    assert pred.cell_count(xyz_grid(*tile)) > 4
    (reply,) = view.fetch([tile])
    assert reply.status == "ok"
    assert model.stats.calls == 0
    assert layer.tiles_zoom_in == 1 and "zoom in" in layer.status
    # The message tile is drawn (opaque pixels), not blank.
    assert (decode(reply.png)[..., 3] > 0).mean() > 0.5
    # Zoomed in, the same layer predicts.
    (reply,) = view.fetch(center_tiles(scene, 17, n=1))
    assert model.stats.calls > 0 and reply.status == "ok"


def test_data_tiles_carry_the_generation_that_a_new_image_or_refresh_moves_on(scene, make_layer):
    # The browser keeps tile values under the generation a tile was read with (js/tile_cache.ts)
    # and looks them up under the newest it knows: each way the kernel forgets its tile arrays
    # must move it on, in the redraw message itself, and replies must name what they were read under.
    gate, entered = threading.Event(), threading.Event()
    model = emw.Model.from_callable(
        lambda inputs: (entered.set(), gate.wait(10), inputs["array"][..., 0:1])[2], input_tile_size=[64, 64]
    )
    layer, view = make_layer(model.predict_image(scene, cache=None), vis_params={"min": 0, "max": 1})
    tiles = center_tiles(scene, 14)
    gate.set()
    first = view.fetch(tiles)
    g0 = layer._generation
    assert {r.content["generation"] for r in first} == {g0}
    # Other bands: a redraw, but the same arrays (the kernel's tile cache keeps them): same generation.
    layer.vis_params = {"bands": ["output"], "min": 0, "max": 2}  # a restyle: no redraw at all
    layer.vis_params = {"bands": ["output", "output", "output"], "min": 0, "max": 1}
    assert [m["generation"] for m in view.messages("redraw")] == [g0]
    assert view.fetch(tiles[:1])[0].content["generation"] == g0
    layer.vis_params = {"min": 0, "max": 1}
    # A new image (a new model, new parameters or a new input all arrive this way).
    layer.image = emw.Model.from_callable(
        lambda inputs: inputs["array"][..., 1:2], input_tile_size=[64, 64]
    ).predict_image(scene, cache=None)
    assert layer._generation == g0 + 1
    # The redraw names the style the new tiles are coloured with (its `_style` update may be lost).
    assert view.messages("redraw")[-1] == {
        "type": "redraw",
        "generation": g0 + 1,
        "style": layer._style["version"],
    }
    second = view.fetch(tiles)
    assert {r.content["generation"] for r in second} == {g0 + 1}
    assert not np.array_equal(first[0].values, second[0].values)
    # A tile read before a refresh but answered after it names the generation it was read under.
    layer.image = model.predict_image(scene, cache=None)
    gate.clear()
    entered.clear()
    rid = view.request(*tiles[0])
    assert entered.wait(10)  # the worker is in the model call, with generation g0 + 2 read
    layer.refresh()
    assert view.messages("redraw")[-1]["generation"] == g0 + 3
    gate.set()
    assert view.wait([rid])[rid].content["generation"] == g0 + 2
    assert view.fetch(tiles[:1])[0].content["generation"] == g0 + 3


def test_an_image_beyond_the_web_maps_latitudes_says_so_instead_of_showing_empty_tiles(scene, make_layer):
    # 100 km square around the North Pole (Arctic polar stereographic): north of 89.3 degrees,
    # where EPSG:3857 map tiles never reach.
    polar = emw.Image.from_array(
        np.ones((2, 100, 100), np.float32),
        transform=Affine(1000, 0, -50000, 0, -1000, 50000),
        crs="EPSG:3413",
        band_names=["red", "nir"],
    )
    assert polar.bounds[1] > 89
    with pytest.warns(UserWarning, match=r"beyond the 85\.05 degrees .* to_numpy\(\) or export\(\)"):
        layer, _ = make_layer(diff_model().predict_image(polar))
    assert "beyond the 85.05 degrees that a web map (EPSG:3857) can show" in layer.notice
    layer.refresh()
    assert "beyond the 85.05 degrees" in layer.notice  # a refresh does not forget why
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layer.image = diff_model().predict_image(scene)  # an image the map shows: no warning
        make_layer(diff_model().predict_image(scene))
    assert layer.notice == ""


def test_a_model_that_gives_only_nan_says_so_instead_of_showing_empty_tiles(scene, make_layer):
    def broken(inputs):  # e.g. a log of inputs it was not trained on
        return np.full(inputs["array"].shape[:-1] + (1,), np.nan, np.float32)

    nan_model = emw.Model.from_callable(
        broken, input_tile_size=[64, 64], output_bands={"diff": {"type": "float"}}
    )
    pred = nan_model.predict_image(scene)
    layer, view = make_layer(pred)
    assert layer.notice == ""  # nothing computed yet
    tiles = center_tiles(scene, 13)
    replies = view.fetch(tiles)
    assert [(r.status, r.kind) for r in replies] == [("ok", "data")] * 4  # tiles came ...
    assert all(np.isnan(r.values).all() for r in replies)  # ... all of them empty
    assert pred.cells_without_values > 0
    assert layer.notice.startswith(
        f"The model has returned no finite value (only NaN or inf) for any of the {pred.cells_without_values} cells"
    )
    # The same layer on a model that gives values: the notice goes with the new image's first tiles.
    layer.image = diff_model().predict_image(scene)
    assert layer.notice == ""
    view.fetch(center_tiles(scene, 13, n=2))
    assert layer.notice == "" and layer.image.cells_without_values == 0
