"""The walking skeleton: kernel-made tiles drawn in a real browser, pixel for pixel."""

from __future__ import annotations

import numpy as np

from ee_model_widgets.widgets.tile_layer import coordinate_tile

from .harness import NotebookPage, png_rgb, write_notebook

SKELETON = [
    "import ipyleaflet\n"
    "from ee_model_widgets.widgets.tile_layer import KernelTileLayer, coordinate_tile\n"
    "layer = KernelTileLayer(coordinate_tile)\n"
    "m = ipyleaflet.Map(center=(0, 0), zoom=2, layers=(), layout={'width': '700px', 'height': '520px'})\n"
    "m.add(layer)\n"
    "m",
]


def test_kernel_tiles_are_drawn_with_the_right_pixels(any_server, page):
    name = f"skeleton_{any_server.app}.ipynb"
    write_notebook(any_server.root / name, SKELETON)
    nb = NotebookPage(page, any_server, name)
    nb.run_all()
    nb.wait_tiles(6)
    tiles = nb.loaded_tiles()
    assert len(tiles) >= 2, f"no tile fully inside the map: {tiles}"
    for zxy in tiles[:4]:
        z, x, y = map(int, zxy.split("/"))
        shown = nb.tile_pixels(zxy).astype(int)
        expected = png_rgb(coordinate_tile(z, x, y)).astype(int)
        assert shown.shape == expected.shape == (256, 256, 3)
        diff = np.abs(shown - expected)
        # Lossless PNG, no scaling: the browser shows exactly what the kernel drew.
        assert diff.mean() < 1.0 and (diff.max(axis=-1) <= 3).mean() > 0.99, (zxy, diff.mean())
    assert not any("ee-model-widgets" in c and "error" in c.lower() for c in nb.console), nb.console
    # The kernel saw the same tiles: its progress traits count them.
    done = int(nb.run_code("print(layer.tiles_done)").strip())
    assert done >= len(tiles)


def test_a_tile_the_kernel_never_answers_is_asked_again_then_shown_as_an_error(lab_server, page):
    cells = [
        "import time, ipyleaflet\n"
        "from ee_model_widgets.widgets.tile_layer import KernelTileLayer, coordinate_tile\n"
        "requests = []\n"
        "def stuck(z, x, y):\n"
        "    requests.append((z, x, y))\n"
        "    time.sleep(30)  # far longer than the browser waits\n"
        "    return coordinate_tile(z, x, y)\n"
        "layer = KernelTileLayer(stuck, request_timeout=1.5, workers=8)  # a free worker for every attempt\n"
        "m = ipyleaflet.Map(center=(0, 0), zoom=0, layers=(), layout={'width': '300px', 'height': '300px'})\n"
        "m.add(layer)\n"
        "m",
    ]
    write_notebook(lab_server.root / "stuck.ipynb", cells)
    nb = NotebookPage(page, lab_server, "stuck.ipynb")
    nb.run_all()
    # 1.5 s, one retry, 1.5 s more: then the browser draws its own error tile.
    page.wait_for_function(
        "() => [...document.querySelectorAll('.ee-model-tile .leaflet-tile')].some(i => i.dataset.status === 'error')",
        timeout=20_000,
    )
    # The world tile is the only tile (none is asked for left or right of the world), and it is
    # the browser's own error tile: the kernel's 45 s batch_timeout comes far later.
    tiles = page.evaluate(
        "() => [...document.querySelectorAll('.ee-model-tile .leaflet-tile')].map(i => i.dataset.zxy)"
    )
    assert tiles == ["0/0/0"], tiles
    img = page.locator(".ee-model-tile .leaflet-tile[data-zxy='0/0/0']")
    assert img.get_attribute("data-status") == "error"
    # Its canvas shows the red frame the browser draws for a request it gave up on.
    frame = page.evaluate(
        "() => Array.from(document.querySelector(\".ee-model-tile .leaflet-tile[data-zxy='0/0/0']\")"
        ".getContext('2d').getImageData(1, 128, 1, 1).data)"
    )
    assert frame[0] > 150 and frame[1] < 60 and frame[3] > 200, frame
    assert "leaflet-tile-loaded" in img.get_attribute("class")
    # The world tile of zoom 0 was asked for twice (the retry) before the browser gave up; the
    # kernel answered no tile with an error of its own.
    assert nb.run_code("print(requests.count((0, 0, 0)), layer.tiles_failed)").strip() == "2 0"
