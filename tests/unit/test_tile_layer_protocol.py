"""The kernel half of the tile protocol, driven through the real ipywidgets comm dispatch."""

from __future__ import annotations

import io
import logging
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from ee_model_widgets.widgets.headless import HeadlessView
from ee_model_widgets.widgets.tile_layer import KernelTileLayer


def png_of(value: int) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((256, 256, 4), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def make_view():
    layers = []

    def make(tile_fn, **kw):
        layer = KernelTileLayer(tile_fn, **kw)
        layers.append(layer)
        return layer, HeadlessView(layer)  # only the wire is replaced; dispatch is ipywidgets'

    yield make
    for layer in layers:
        layer.close()


def test_request_is_answered_with_the_png_as_a_binary_buffer(make_view):
    layer, view = make_view(lambda z, x, y: png_of(10 * z + x + y))
    view.request(3, 2, 1, id="v1-0")
    reply = view.wait(["v1-0"])["v1-0"]
    assert view.messages("tile_response") == [{"type": "tile_response", "id": "v1-0", "status": "ok"}]
    assert reply.png == png_of(33)
    assert layer.tiles_done == 1 and layer.tiles_failed == 0 and layer.last_error == ""


def test_cancel_drops_a_queued_request(make_view):
    gate = threading.Event()

    def slow(z, x, y):
        gate.wait(10)
        return png_of(x)

    layer, view = make_view(slow, workers=1, batch_size=1)
    view.request(1, 0, 0, id="a")
    time.sleep(0.1)  # "a" is now running, held at the gate
    view.request(1, 1, 0, id="b")
    view.cancel("b")
    gate.set()
    view.wait(["a"])
    time.sleep(0.2)
    assert list(view.replies) == ["a"]
    assert layer.tiles_cancelled == 1


def test_sync_names_the_requests_still_held_and_forgets_answered_and_unknown_ones(make_view):
    gate = threading.Event()
    layer, view = make_view(lambda z, x, y: (gate.wait(10), png_of(z))[1], workers=1, batch_size=1)
    view.request(4, 0, 0, id="running")
    time.sleep(0.1)
    view.request(4, 1, 0, id="queued")
    # "lost" never reached the kernel: the browser must learn that it is not held, so it asks again.
    assert view.sync(["running", "queued", "lost"], sync=1) == ["running", "queued"]
    gate.set()
    view.wait(["running", "queued"])
    time.sleep(0.1)
    assert view.sync(["running", "queued"], sync=2) == []  # answered: nothing left to wait for


def test_a_sync_with_malformed_ids_is_ignored_with_a_warning(make_view, caplog):
    layer, view = make_view(lambda z, x, y: png_of(1))
    with caplog.at_level(logging.WARNING, logger="ee_model_widgets.widgets.tile_layer"):
        view.say({"type": "tile_sync", "sync": 1, "ids": "a,b"})
    assert view.messages("tile_sync") == []
    assert any("malformed" in r.getMessage() for r in caplog.records)


def test_the_browser_reports_resent_and_lost_requests_into_the_layer_counts(make_view):
    layer, view = make_view(lambda z, x, y: png_of(1))
    view.say({"type": "tile_report", "resent": 3, "lost": 0})
    view.say({"type": "tile_report", "resent": 1, "lost": 2})
    assert (layer.tiles_resent, layer.tiles_lost) == (4, 2)


def test_requests_of_every_zoom_are_served(make_view):
    # Two views of one layer (a second browser tab) may show different zooms: none is dropped.
    layer, view = make_view(lambda z, x, y: png_of(z))
    replies = view.fetch([(4, 0, 0), (5, 0, 0), (4, 1, 1)])
    assert [r.status for r in replies] == ["ok", "ok", "ok"]
    assert layer.tiles_cancelled == 0


def test_unknown_and_malformed_messages_are_ignored_with_a_warning(make_view, caplog):
    layer, view = make_view(lambda z, x, y: png_of(1))
    with caplog.at_level(logging.WARNING, logger="ee_model_widgets.widgets.tile_layer"):
        view.say({"type": "something_new", "id": "x"})  # not ours: silently ignored
        view.say({"type": "tile_request", "id": "x"})  # missing z/x/y
        view.say({"type": "tile_request", "id": "y", "z": "3", "x": 0, "y": 0})
        view.say(["not", "a", "dict"])
    time.sleep(0.1)
    assert view.replies == {}
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 3
    # The layer still serves well-formed requests afterwards.
    assert view.fetch([(0, 0, 0)])[0].status == "ok"


@pytest.mark.parametrize(
    "tile_fn, expected",
    [
        (lambda z, x, y: 1 / 0, "ZeroDivisionError: division by zero"),
        (lambda z, x, y: "not bytes", "tile_fn returned str, not PNG bytes"),
        (lambda z, x, y: b"GIF89a...", "tile_fn returned bytes, not PNG bytes"),
    ],
)
def test_bad_tile_fn_gives_an_error_tile_and_last_error(make_view, tile_fn, expected):
    layer, view = make_view(tile_fn)
    (reply,) = view.fetch([(2, 1, 3)])
    assert reply.status == "error"
    # The reply is still a real, drawable PNG: the error tile.
    img = PILImage.open(io.BytesIO(reply.png))
    assert img.format == "PNG" and img.size == (256, 256)
    assert expected in layer.last_error and "tile 2/1/3" in layer.last_error
    assert layer.tiles_failed == 1
    # ... and the kernel keeps serving other tiles.
    layer.tile_fn = lambda z, x, y: png_of(5)
    assert view.fetch([(2, 0, 0)])[0].status == "ok"
