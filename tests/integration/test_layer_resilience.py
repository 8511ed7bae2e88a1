"""A slow, hung or flooded prediction layer never wedges and answers every request.

Driven through the widget's real comm dispatch (`HeadlessView`); the models are real
`Model.from_callable` models run by the real predictor, some made to hang on an event.
Pixels are checked against values worked out by hand: the scene lies on the slippy-map
tile lattice, so a tile's pixels are a slice of the scene's array.
"""

from __future__ import annotations

import collections
import io
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

import ee_model_widgets as emw
from ee_model_widgets.widgets.headless import HeadlessView
from ee_model_widgets.widgets.scheduler import TileRequest
from tests.helpers import tile_lattice_scene

Z = 12
X0, Y0 = 2000, 1500  # the scene covers tiles X0..X0+1, Y0..Y0+1 at zoom Z
GREY = {"min": 0, "max": 255}  # one band, no palette: the tile's grey level is the value itself


@pytest.fixture(scope="module")
def values():
    return np.random.default_rng(7).integers(0, 100, (1, 512, 512)).astype("float32")


@pytest.fixture(scope="module")
def scene(values):
    return tile_lattice_scene(values, Z, X0, Y0)


def model(fn=None, factor=2.0):
    def scale(inputs):
        if fn is not None:
            fn()
        return inputs["array"] * factor

    return emw.Model.from_callable(scale, input_tile_size=[64, 64], output_bands={"p": {"type": "float"}})


def expected_grey(values, factor, x, y):
    """The grey level of tile (Z, x, y) of `values * factor`, by hand."""
    c, r = (x - X0) * 256, (y - Y0) * 256
    return np.clip(values[0, r : r + 256, c : c + 256] * factor, 0, 255).astype(np.uint8)  # vis max


def decode(png):
    return np.asarray(PILImage.open(io.BytesIO(png)).convert("RGBA"))


def assert_tile(reply, values, factor, x, y):
    assert reply.status == "ok"
    rgba = decode(reply.png)
    grey = expected_grey(values, factor, x, y)
    assert grey.max() > 0  # a blank tile could not pass
    assert np.array_equal(rgba[..., 0], grey) and np.array_equal(rgba[..., 1], grey)
    assert (rgba[..., 3] == 255).all()


TILES = [(Z, X0, Y0), (Z, X0 + 1, Y0), (Z, X0, Y0 + 1), (Z, X0 + 1, Y0 + 1)]


@pytest.fixture
def make_layer():
    layers = []

    def make(image, **kw):
        layer = emw.PredictionLayer(image, vis_params=GREY, **kw)
        layers.append(layer)
        return layer, HeadlessView(layer)

    yield make
    for layer in layers:
        layer.close()


@pytest.fixture
def hang():
    """An event a model waits on (up to 30 s: a model that sleeps); set at teardown."""
    release = threading.Event()
    yield release
    release.set()


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_swapping_the_image_does_not_wait_for_a_hung_model(scene, values, make_layer, hang):
    slow = model(lambda: hang.wait(30)).predict_image(scene, cache=None)
    layer, view = make_layer(slow, batch_timeout=None)  # only the swap may free the layer
    old = [view.request(*t) for t in TILES]
    assert wait_for(lambda: layer.scheduler.snapshot()["running"] == len(TILES))  # both workers stuck

    layer.image = model(factor=2.0).predict_image(scene, cache=None)  # what the panel does
    # The browser's answer to 'redraw': drop its requests and ask for the tiles again.
    assert view.messages("redraw")
    for rid in old:
        view.cancel(rid)
    new = view.fetch(TILES, timeout=20)  # the old calls hang for 30 s: these cannot wait for them
    for (_, x, y), reply in zip(TILES, new):
        assert_tile(reply, values, 2.0, x, y)

    # When the hung calls finally return, their (old image's) tiles are thrown away.
    hang.set()
    time.sleep(0.5)
    assert not set(old) & set(view.replies)
    assert layer.tiles_done == len(TILES) and layer.tiles_failed == 0


def test_requests_in_flight_when_the_image_changes_get_the_new_image(scene, values, make_layer, hang):
    slow = model(lambda: hang.wait(30)).predict_image(scene, cache=None)
    layer, view = make_layer(slow, batch_timeout=None)
    ids = [view.request(*t) for t in TILES]
    assert wait_for(lambda: layer.scheduler.snapshot()["running"] == len(TILES))
    # A view that did not (yet) cancel: its pending requests are answered with the new image.
    layer.image = model(factor=3.0).predict_image(scene, cache=None)
    got = view.wait(ids, timeout=20)
    for (_, x, y), rid in zip(TILES, ids):
        assert_tile(got[rid], values, 3.0, x, y)


def test_a_hung_batch_times_out_into_error_tiles_and_the_layer_recovers(scene, values, make_layer, hang):
    layer, view = make_layer(
        model(lambda: hang.wait(30)).predict_image(scene, cache=None), batch_timeout=1.0, workers=2
    )
    replies = view.fetch(TILES, timeout=20)
    assert [r.status for r in replies] == ["error"] * len(TILES)
    assert "no answer from the model within 1 s" in layer.last_error
    assert "batch_timeout" in layer.last_error
    assert all(decode(r.png).shape == (256, 256, 4) for r in replies)
    assert layer.tiles_failed == len(TILES) and layer.tiles_running == 0

    # Every worker's call is stuck: the model is not called again (no thread pile-up) and
    # the next tiles are answered at once, saying why.
    again = view.fetch(TILES[:1], timeout=20)
    assert again[0].status == "error" and "never returned" in layer.last_error

    # The model comes back: once its stuck calls return, tiles flow again.
    hang.set()
    assert wait_for(lambda: layer.scheduler._hung == 0)
    for (_, x, y), reply in zip(TILES, view.fetch(TILES, timeout=20)):
        assert_tile(reply, values, 2.0, x, y)


def test_3000_requests_into_a_full_queue_each_get_exactly_one_answer(scene, values, make_layer, hang):
    gated = model(lambda: hang.wait(30)).predict_image(scene, cache=None)
    # One worker, held in the model while the flood arrives (a second would serve the flood's
    # empty tiles meanwhile, as fast as they come: no flood to refuse).
    layer, view = make_layer(gated, batch_timeout=None, max_queued=256, workers=1)
    first = view.request(*TILES[0])
    assert wait_for(lambda: layer.scheduler.snapshot()["running"] >= 1)
    flood = []
    for i in range(3000):  # a 60 x 50 block of zoom-13 tiles, far more than the queue holds
        flood.append(view.request(13, 100 + i % 60, 100 + i // 60))
    hang.set()
    view.wait([first, *flood], timeout=120)
    answers = collections.Counter(m["id"] for m in view.messages("tile_response"))
    assert all(answers[rid] == 1 for rid in [first, *flood])  # exactly one reply each
    statuses = collections.Counter(view.replies[rid].status for rid in flood)
    assert set(statuses) == {"ok", "cancelled"}
    assert statuses["ok"] <= 256 + 8  # the queue plus what the worker had taken
    assert statuses["cancelled"] >= 3000 - 256 - 8
    refusal = next(m for m in view.messages("tile_response") if m["status"] == "cancelled")
    assert "too many tiles" in refusal["reason"]
    assert layer.tiles_cancelled == statuses["cancelled"]
    assert layer.tiles_done == statuses["ok"] + 1 and layer.tiles_failed == 0
    assert_tile(view.replies[first], values, 2.0, X0, Y0)


def test_a_tile_outside_the_world_does_not_spoil_its_batch(scene, values, make_layer):
    layer, view = make_layer(model().predict_image(scene, cache=None), workers=1)
    bad = (Z, 2**Z, Y0)  # x runs 0 .. 2**Z - 1
    replies = view.fetch([TILES[0], bad, TILES[1], TILES[2]], timeout=30)
    for (_, x, y), reply in zip([TILES[0], TILES[1], TILES[2]], [replies[0], replies[2], replies[3]]):
        assert_tile(reply, values, 2.0, x, y)
    assert replies[1].status == "error"
    assert f"Tile {Z}/{2**Z}/{Y0} is outside the world" in layer.last_error
    assert layer.tiles_done == 3 and layer.tiles_failed == 1


def test_a_bad_request_inside_a_batch_fails_alone(scene, values, make_layer):
    # Even handed to the renderer inside a batch (the scheduler answers such requests before
    # batching), the bad tile gets its own error and the three good ones their pixels.
    layer, _ = make_layer(model().predict_image(scene, cache=None))
    batch = [TileRequest("a", *TILES[0]), TileRequest("bad", Z, -1, Y0), TileRequest("b", *TILES[1])]
    batch.append(TileRequest("c", *TILES[2]))
    results = layer._render_many(batch)
    assert isinstance(results[1], Exception) and "does not exist" in str(results[1])
    for (_, x, y), tile in zip(TILES[:3], [results[0], results[2], results[3]]):
        # The data the browser colours: the predictions themselves, values x 2.
        c, r = (x - X0) * 256, (y - Y0) * 256
        assert tile.values.shape == (1, 256, 256) and tile.values.max() > 0
        assert np.array_equal(tile.values[0], values[0, r : r + 256, c : c + 256] * 2.0)
