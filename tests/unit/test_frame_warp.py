"""Frame warps (core/frame_warp.py): any window of a frame reads exactly like the whole frame.

Raster images warp each fixed frame of a target lattice through one GDAL WarpedVRT and read
just the window a request needs from it; the promise that a pixel's value does not depend
on the window it is read in then rests on GDAL warping the VRT in fixed blocks of its own.
These tests read windows of every size (GDAL warps reads larger than its block as one chunk
unless told not to) and compare them with the whole frame, data and mask, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from ee_model_widgets import Image
from ee_model_widgets.core import frame_warp, raster
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.core.warp import _mem_dataset as mem_dataset

SRC_CRS = CRS.from_epsg(32633)
SRC_T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)


def _source(size: int = 160, seed: int = 0) -> np.ndarray:
    """Two bands of noise, NaN = masked: a hole in band 0 only, scattered holes in both."""
    rng = np.random.default_rng(seed)
    src = rng.random((2, size, size)).astype(np.float32)
    src[0, 30:60, 70:120] = np.nan
    src[:, rng.random((size, size)) < 0.01] = np.nan
    return src


def _frame(size: int) -> Grid:
    """A web-mercator frame whose top-left part lies off the source (so some output is masked)."""
    w, s, e, n = transform_bounds(SRC_CRS, "EPSG:3857", *rasterio.transform.array_bounds(160, 160, SRC_T))
    res = (e - w) / 700  # ~2.3 target px per source px: the map zoomed in
    return Grid("EPSG:3857", Affine(res, 0, w - 60 * res, 0, -res, n + 40 * res), size, size)


def _windows(size: int, seed: int) -> list[tuple[int, int, int, int]]:
    rng = np.random.default_rng(seed)
    out = [(0, 0, 1, 1), (size - 1, size - 1, 1, 1), (3, 5, size - 3, size - 5), (200, 100, 600, 300)]
    while len(out) < 10:  # sizes on both sides of GDAL's 512 x 128 blocks
        w, h = int(rng.integers(1, size + 1)), int(rng.integers(1, size + 1))
        out.append((int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1)), w, h))
    return out


@pytest.mark.parametrize("resampling", [Resampling.nearest, Resampling.bilinear, Resampling.cubic])
def test_any_window_of_a_frame_equals_the_whole_frame(resampling):
    src, size = _source(), 1024
    frame = _frame(size)
    whole = frame_warp.warp_frame_window(src, SRC_T, SRC_CRS, frame, (0, 0, size, size), resampling, None)
    nan = np.isnan(whole)
    assert 0.05 < nan.mean() < 0.9  # values and masked pixels (off the source, holes) both there
    assert nan[0].sum() > nan[1].sum()  # band 0's own hole stays its own (bands keep their masks)
    for c, r, w, h in _windows(size, seed=resampling.value):
        sub = frame_warp.warp_frame_window(src, SRC_T, SRC_CRS, frame, (c, r, w, h), resampling, None)
        ref = whole[:, r : r + h, c : c + w]
        assert np.array_equal(sub, ref, equal_nan=True), (
            f"{resampling.name} window {(c, r, w, h)}: {int((~np.isclose(sub, ref, equal_nan=True)).sum())} px differ"
        )


def test_frames_are_whole_blocks_of_the_tile_lattice_and_bound_their_source():
    # Frames are cut at multiples of BLOCK (web tiles never straddle a frame), GDAL's blocks
    # (the cached units) tile a frame, and a frame's source footprint stays bounded.
    for scales in [None, (0.05, 0.05), (0.17, 0.2), (1.0, 1.0), (3.9, 3.9)]:
        size = frame_warp.frame_size(scales)
        assert size % raster.BLOCK == 0 and size <= frame_warp.MAX_FRAME
        bw, bh = frame_warp.frame_block_shape(size)
        assert size % bw == 0 and size % bh == 0
        if scales is not None:
            assert size * max(scales) <= frame_warp.FRAME_SOURCE_PIXELS or size == raster.BLOCK
    frame = _frame(frame_warp.frame_size((0.4, 0.4)))
    src = np.ascontiguousarray(_source()[:1])
    with mem_dataset(src, SRC_T) as ds:  # the block shape GDAL really gives a frame's WarpedVRT
        with WarpedVRT(
            ds, crs=frame.crs, transform=frame.transform, width=frame.width, height=frame.height
        ) as vrt:
            assert vrt.block_shapes[0] == frame_warp.frame_block_shape(frame.width)[::-1]


def test_map_tiles_of_a_viewport_equal_one_read_over_them_with_caches_cold():
    # The tile path end to end: a batch of web tiles read tile by tile (each cold) equals one
    # read of the whole viewport, which spans several frames and GDAL blocks.
    src = _source(400, seed=4)
    img = Image.from_array(np.ma.masked_invalid(src), transform=SRC_T, crs=SRC_CRS, band_names=["a", "b"])
    z = 16
    w, s, e, n = img.bounds
    # The viewport starts one tile north-west of the image's corner: off-image pixels too.
    col0 = int((w + 180) / 360 * 2**z) - 1
    row0 = int((1 - math.asinh(math.tan(math.radians(n))) / math.pi) / 2 * 2**z) - 1
    t = xyz_grid(z, 0, 0).transform
    tiles = [(x, y) for y in range(row0, row0 + 3) for x in range(col0, col0 + 4)]
    raster.clear_block_cache()
    big = Grid("EPSG:3857", t @ Affine.translation(col0 * 256, row0 * 256), 4 * 256, 3 * 256)
    ref = img.read(big, resampling="bilinear")
    assert 0.05 < ref.mask.mean() < 0.95
    for x, y in tiles:
        raster.clear_block_cache()
        tile = img.read(xyz_grid(z, x, y), resampling="bilinear")
        c, r = (x - col0) * 256, (y - row0) * 256
        part = ref[:, r : r + 256, c : c + 256]
        assert np.array_equal(tile.mask, part.mask), f"tile {z}/{x}/{y}: masks differ"
        assert np.array_equal(tile.data, part.data), f"tile {z}/{x}/{y}: values differ"
