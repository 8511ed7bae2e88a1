"""The kernel half of the tile protocol, driven through the real ipywidgets comm dispatch."""

from __future__ import annotations

import io
import logging
import threading
import time

import numpy as np
import pytest
from PIL import Image as PILImage

from ee_model_widgets.widgets.tile_layer import KernelTileLayer

from ..widget_wire import SentMessages, browser_says


def png_of(value: int) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(np.full((256, 256, 4), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def layer_and_wire():
    layers = []

    def make(tile_fn, **kw):
        layer = KernelTileLayer(tile_fn, **kw)
        wire = SentMessages()
        layer.comm.send = wire.send  # only the transport is replaced; dispatch is ipywidgets'
        layers.append(layer)
        return layer, wire

    yield make
    for layer in layers:
        layer.scheduler.close()


def test_request_is_answered_with_the_png_as_a_binary_buffer(layer_and_wire):
    layer, wire = layer_and_wire(lambda z, x, y: png_of(10 * z + x + y))
    browser_says(layer, {"type": "tile_request", "id": "v1-0", "z": 3, "x": 2, "y": 1})
    ((content, buffers),) = wire.wait_responses(1)
    assert content == {"type": "tile_response", "id": "v1-0", "status": "ok"}
    assert bytes(buffers[0]) == png_of(33)
    assert layer.tiles_done == 1 and layer.tiles_failed == 0 and layer.last_error == ""


def test_cancel_drops_a_queued_request(layer_and_wire):
    gate = threading.Event()

    def slow(z, x, y):
        gate.wait(10)
        return png_of(x)

    layer, wire = layer_and_wire(slow, workers=1, batch_size=1)
    browser_says(layer, {"type": "tile_request", "id": "a", "z": 1, "x": 0, "y": 0})
    time.sleep(0.1)  # "a" is now running, held at the gate
    browser_says(layer, {"type": "tile_request", "id": "b", "z": 1, "x": 1, "y": 0})
    browser_says(layer, {"type": "tile_cancel", "id": "b"})
    gate.set()
    wire.wait_responses(1)
    time.sleep(0.2)
    assert [c["id"] for c, _ in wire.responses()] == ["a"]
    assert layer.tiles_cancelled == 1


def test_unknown_and_malformed_messages_are_ignored_with_a_warning(layer_and_wire, caplog):
    layer, wire = layer_and_wire(lambda z, x, y: png_of(1))
    with caplog.at_level(logging.WARNING, logger="ee_model_widgets.widgets.tile_layer"):
        browser_says(layer, {"type": "something_new", "id": "x"})  # not ours: silently ignored
        browser_says(layer, {"type": "tile_request", "id": "x"})  # missing z/x/y
        browser_says(layer, {"type": "tile_request", "id": "y", "z": "3", "x": 0, "y": 0})
        browser_says(layer, ["not", "a", "dict"])
    time.sleep(0.1)
    assert wire.responses() == []
    assert sum("malformed" in r.getMessage() for r in caplog.records) == 3
    # The layer still serves well-formed requests afterwards.
    browser_says(layer, {"type": "tile_request", "id": "ok", "z": 0, "x": 0, "y": 0})
    assert wire.wait_responses(1)[0][0]["status"] == "ok"


@pytest.mark.parametrize(
    "tile_fn, expected",
    [
        (lambda z, x, y: 1 / 0, "ZeroDivisionError: division by zero"),
        (lambda z, x, y: "not bytes", "tile_fn returned str, not PNG bytes"),
        (lambda z, x, y: b"GIF89a...", "tile_fn returned bytes, not PNG bytes"),
    ],
)
def test_bad_tile_fn_gives_an_error_tile_and_last_error(layer_and_wire, tile_fn, expected):
    layer, wire = layer_and_wire(tile_fn)
    browser_says(layer, {"type": "tile_request", "id": "e", "z": 2, "x": 1, "y": 3})
    ((content, buffers),) = wire.wait_responses(1)
    assert content["status"] == "error"
    # The reply is still a real, drawable PNG: the error tile.
    img = PILImage.open(io.BytesIO(bytes(buffers[0])))
    assert img.format == "PNG" and img.size == (256, 256)
    assert expected in layer.last_error and "tile 2/1/3" in layer.last_error
    assert layer.tiles_failed == 1
    # ... and the kernel keeps serving other tiles.
    layer.tile_fn = lambda z, x, y: png_of(5)
    browser_says(layer, {"type": "tile_request", "id": "f", "z": 2, "x": 0, "y": 0})
    assert wire.wait_responses(2)[1][0]["status"] == "ok"
