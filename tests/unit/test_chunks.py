"""Chunks of lazy arrays and exports: whole model cells on cell edges; dask only when asked."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from affine import Affine

from ee_model_widgets import Image, Model
from ee_model_widgets.core.chunks import chunk_edges, windows
from ee_model_widgets.errors import InputError


def prediction(origin_x: float, origin_y: float, size: int = 3000, tile: int = 128):
    img = Image.from_array(
        np.ones((2, size, size), np.float32),
        transform=Affine(10, 0, origin_x, 0, -10, origin_y),
        crs="EPSG:32719",
        band_names=["red", "nir"],
    )
    model = Model.from_callable(lambda b: b["array"][..., :1], input_tile_size=tile)
    return model.predict_image(img, cache=None)


def test_default_chunks_are_whole_cells_on_cell_edges():
    # Cells tile the CRS from its origin: x = 500 km is pixel 50000 = 390 cells + 80 px.
    pred = prediction(500_000, 7_000_000)
    cols, rows = chunk_edges(pred, pred.grid)
    assert cols[0] == 0 and cols[-1] == 3000 and rows[0] == 0 and rows[-1] == 3000
    assert cols[1] == 128 - 50_000 % 128  # the first cut is the first cell edge
    assert all((c + 50_000) % 128 == 0 for c in cols[1:-1])
    assert all((700_000 - r) % 128 == 0 for r in rows[1:-1])
    assert set(np.diff(cols[1:-1])) == {1024}  # 8 cells of 128 px
    wins = windows(cols, rows)
    assert sum(w * h for _, _, w, h in wins) == 3000 * 3000  # a partition of the grid


def test_chunk_sizes_of_whole_cells_are_placed_on_cell_edges_others_at_the_origin():
    pred = prediction(499_200, 7_000_320)  # corner on a cell corner
    assert chunk_edges(pred, pred.grid, 256)[0][:3] == [0, 256, 512]
    pred = prediction(500_000, 7_000_000)
    assert chunk_edges(pred, pred.grid, 256)[0][:3] == [0, 48, 304]
    assert chunk_edges(pred, pred.grid, (100, 300))[0][:3] == [0, 300, 600]  # not whole cells
    plain = Image.from_array(np.ones((1, 50, 70)), transform=Affine(10, 0, 5, 0, -10, 3), crs="EPSG:32719")
    assert chunk_edges(plain, plain.grid) == ([0, 70], [0, 50])


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, (1, 2, 3), "big"])
def test_bad_chunks_are_refused_with_the_accepted_forms(bad):
    pred = prediction(499_200, 7_000_320, size=256)
    with pytest.raises(InputError, match=r"chunks must be None, a positive int or \(rows, cols\)"):
        chunk_edges(pred, pred.grid, bad)


def test_the_package_and_a_local_export_do_not_import_dask(tmp_path):
    code = (
        "import sys, numpy as np, ee_model_widgets as emw\n"
        "from affine import Affine\n"
        "img = emw.Image.from_array(np.ones((1, 300, 300)), transform=Affine(10, 0, 0, 0, -10, 0), crs='EPSG:32719')\n"
        f"img.export({str(tmp_path / 'x.tif')!r}, progress=False)\n"
        "print(sorted(m for m in ('dask', 'distributed', 'xarray') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
