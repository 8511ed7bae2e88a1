"""A pixel's value does not depend on the window it is read in.

The map reads tiles in batches, `tile()`/`to_numpy()`/exports read other windows, and the
design promises that what the map shows is exactly what an export writes. So for every
image kind, CRS pair and resampling, random sub-windows of a big read (and zoomed-out
reads, which go through overviews / pyramids) must equal the big read bit for bit, data
and mask. The block cache is switched off so every read really warps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import transform as transform_points

from ee_model_widgets import Image, Projection
from ee_model_widgets.core import frame_warp, raster
from ee_model_widgets.core.cache import CellCache
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.core.region import grid_for
from tests.helpers import run_in_threads

NODATA = -9999.0
# name -> (source CRS, source transform)
SOURCES = {
    "utm": ("EPSG:32633", Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)),
    "lonlat": ("EPSG:4326", Affine(0.0001, 0.0, 10.0, 0.0, -0.0001, 45.0)),
}
# (case id, source, target projection, zoomed out?)
CASES = [
    ("utm->3857", "utm", Projection("EPSG:3857", xyz_grid(14, 0, 0).transform), False),
    ("utm->3857-zoomed-out", "utm", Projection("EPSG:3857", xyz_grid(11, 0, 0).transform), True),
    ("utm->4326", "utm", Projection("EPSG:4326").at_scale(7), False),
    ("utm->4326-zoomed-out", "utm", Projection("EPSG:4326").at_scale(45), True),
    ("4326->3857", "lonlat", Projection("EPSG:3857", xyz_grid(14, 0, 0).transform), False),
    ("4326->3857-zoomed-out", "lonlat", Projection("EPSG:3857", xyz_grid(11, 0, 0).transform), True),
]


@pytest.fixture
def no_block_cache(monkeypatch):
    """Every read warps its blocks afresh (a cached block would make equality trivial)."""
    monkeypatch.setattr(raster, "_BLOCKS", CellCache(0))
    monkeypatch.setattr(frame_warp, "MAX_OPEN_FRAMES", 0)  # nor GDAL's blocks of an open frame


def _scene(size: int = 320, seed: int = 0) -> np.ma.MaskedArray:
    """Two bands of noise with different masks: a masked square in band 1, scattered holes in both."""
    rng = np.random.default_rng(seed)
    data = rng.random((2, size, size)).astype(np.float32)
    mask = np.zeros(data.shape, bool)
    mask[0, 40:90, 150:260] = True
    mask |= rng.random(data.shape) < 0.01
    return np.ma.MaskedArray(data, mask=mask)


def _images(kind: str, source: str, tmp_path, overviews: bool = True) -> Image:
    crs, transform = SOURCES[source]
    scene = _scene()
    if kind == "array":
        return Image.from_array(scene, transform=transform, crs=crs, band_names=["a", "b"])
    path = tmp_path / f"{source}.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=scene.shape[2],
        height=scene.shape[1],
        count=2,
        dtype="float32",
        crs=crs,
        transform=transform,
        nodata=NODATA,
        tiled=True,
        blockxsize=64,
        blockysize=64,
    ) as ds:
        ds.write(scene.filled(NODATA))
    if overviews:
        with rasterio.open(path, "r+") as ds:
            ds.build_overviews([2, 4, 8], Resampling.average)
    return Image.open(path, band_names=["a", "b"])


def _windows(big: Grid, n: int, seed: int) -> list[tuple[int, int, int, int]]:
    """Random sub-windows of `big`: tiny, small and block-straddling, plus the corners."""
    rng = np.random.default_rng(seed)
    out = [(0, 0, 1, 1), (big.width - 1, big.height - 1, 1, 1)]
    while len(out) < n:
        w = int(rng.integers(1, min(big.width, 300) + 1))
        h = int(rng.integers(1, min(big.height, 300) + 1))
        out.append((int(rng.integers(0, big.width - w + 1)), int(rng.integers(0, big.height - h + 1)), w, h))
    return out


def _assert_same(sub: np.ma.MaskedArray, ref: np.ma.MaskedArray, what: str) -> None:
    assert np.array_equal(sub.mask, ref.mask), (
        f"{what}: masks differ at {int((sub.mask != ref.mask).sum())} px"
    )
    assert np.array_equal(sub.data, ref.data), (
        f"{what}: {int((sub.data != ref.data).sum())} px differ, by up to {np.abs(sub.data - ref.data).max()}"
    )


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
@pytest.mark.parametrize("kind", ["array", "file"])
@pytest.mark.parametrize("case, source, proj, zoomed_out", CASES, ids=[c[0] for c in CASES])
def test_sub_windows_equal_the_big_read(
    case, source, proj, zoomed_out, kind, resampling, tmp_path, no_block_cache
):
    img = _images(kind, source, tmp_path)
    big = grid_for(img, None, proj)
    if not zoomed_out:
        assert big.width > raster.BLOCK  # several blocks: windows straddle block edges
    ref = img.read(big, resampling=resampling)
    assert 0.02 < ref.mask.mean() < 0.8  # the image is there, and so are masked pixels
    for c, r, w, h in _windows(big, 8, seed=len(case)):
        sub = img.read(big.window(c, r, w, h), resampling=resampling)
        _assert_same(sub, ref[:, r : r + h, c : c + w], f"{case} {kind} {resampling} window {(c, r, w, h)}")


def test_map_tiles_equal_an_export_sized_read(no_block_cache, tmp_path):
    # The map's own unit: web tiles read one by one agree with one big read over them.
    img = _images("file", "utm", tmp_path)
    z = 15
    big_grid = grid_for(img, None, Projection("EPSG:3857", xyz_grid(z, 0, 0).transform))
    ref = img.read(big_grid)
    t0 = xyz_grid(z, 0, 0).transform
    col0, row0 = (round(v) for v in ~t0 @ (big_grid.transform.c, big_grid.transform.f))
    for x in range(col0 // 256, (col0 + big_grid.width) // 256 + 1):
        for y in range(row0 // 256, (row0 + big_grid.height) // 256 + 1):
            tile = img.tile(z, x, y)
            c, r = x * 256 - col0, y * 256 - row0
            c0, r0 = max(c, 0), max(r, 0)
            c1, r1 = min(c + 256, big_grid.width), min(r + 256, big_grid.height)
            _assert_same(tile[:, r0 - r : r1 - r, c0 - c : c1 - c], ref[:, r0:r1, c0:c1], f"tile {z}/{x}/{y}")


@pytest.mark.parametrize("per_block", [False, True], ids=["whole-level", "per-block"])
@pytest.mark.parametrize("resampling", ["nearest", "bilinear", "cubic"])
@pytest.mark.parametrize("case, source, proj, zoomed_out", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_file_without_overviews_reads_exactly_like_the_same_array(
    case, source, proj, zoomed_out, resampling, per_block, tmp_path, no_block_cache, monkeypatch
):
    # Files without overviews are decimated by the same block means as arrays' pyramids,
    # so the two images give identical pixels at every zoom, whatever the window; small
    # files keep a decimated copy, big ones decimate the pixels under each block in strips.
    if per_block:
        monkeypatch.setattr(raster, "_SMALL_FILE", 0)
        monkeypatch.setattr(raster, "_STRIP_PIXELS", 5000)
    arr = _images("array", source, tmp_path)
    tif = _images("file", source, tmp_path, overviews=False)
    big = grid_for(arr, None, proj)
    ref = arr.read(big, resampling=resampling)
    _assert_same(tif.read(big, resampling=resampling), ref, f"{case} file vs array")
    for c, r, w, h in _windows(big, 4, seed=7):
        sub = tif.read(big.window(c, r, w, h), resampling=resampling)
        _assert_same(sub, ref[:, r : r + h, c : c + w], f"{case} window {(c, r, w, h)}")


def test_zoomed_out_reads_use_the_level_the_resolution_calls_for(tmp_path, no_block_cache):
    # Averaged levels smooth noise: the spread of a zoomed-out read tells which level was
    # used, and it is the same for a 1x1 window as for the whole footprint.
    img = _images("array", "utm", tmp_path).resample("bilinear")
    proj = Projection("EPSG:4326").at_scale(160)  # 16x coarser: warped from the 8x level
    big = grid_for(img, None, proj)
    ref = img.read(big, bands=["b"])
    assert ref.compressed().std() < 0.06  # noise of std 0.29 averaged over >= 8x8 pixels
    for c in range(big.width):
        for r in range(big.height):
            _assert_same(img.read(big.window(c, r, 1, 1), bands=["b"]), ref[:, r : r + 1, c : c + 1], "1x1")


@pytest.mark.parametrize("resampling", ["nearest", "bilinear"])
def test_band_subsets_read_the_same_values_as_all_bands(resampling, no_block_cache):
    # Each band keeps its own mask: reading a band alone or with others changes nothing.
    # Bands 0 and 1 share a mask (warped together), band 2 has its own.
    scene = _scene()
    data = np.ma.MaskedArray(
        np.concatenate([scene.data, scene.data[:1] * 2]),
        mask=np.concatenate([scene.mask[:1]] * 2 + [scene.mask[1:]]),
    )
    crs, transform = SOURCES["utm"]
    img = Image.from_array(data, transform=transform, crs=crs, band_names=["a", "b", "c"])
    big = grid_for(img, None, CASES[0][2])
    every = img.read(big, resampling=resampling)
    assert not np.array_equal(every.mask[0], every.mask[2])
    for bands in (["a"], ["b"], ["c"], ["c", "a"], ["b", "c"]):
        idx = [img.band_names.index(b) for b in bands]
        _assert_same(img.read(big, bands=bands, resampling=resampling), every[idx], str(bands))
    # bilinear masks exactly what nearest masks: the source pixel under the centre is masked
    near = img.read(big, resampling="nearest")
    assert np.array_equal(every.mask, near.mask)


def test_nearest_picks_the_exact_source_pixel(tmp_path, no_block_cache):
    # An independent check of the coordinates: PROJ takes every target pixel centre back to
    # the source, and nearest must return that source pixel's value and mask (pixels within
    # 1/100 px of a source pixel edge are left out: there the pick is a rounding matter).
    scene = _scene()
    crs, transform = SOURCES["utm"]
    img = Image.from_array(scene, transform=transform, crs=crs)
    grid = grid_for(img, None, CASES[0][2])
    out = img.read(grid, resampling="nearest")
    rows, cols = np.mgrid[0 : grid.height, 0 : grid.width]
    xs, ys = grid.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    sx, sy = transform_points(grid.crs, crs, xs, ys)
    u, v = ~transform @ (np.asarray(sx), np.asarray(sy))
    u, v = u.reshape(grid.shape), v.reshape(grid.shape)
    inside = (u >= 0) & (v >= 0) & (u < scene.shape[2]) & (v < scene.shape[1])
    clear = (np.abs(u - np.round(u)) > 0.01) & (np.abs(v - np.round(v)) > 0.01)
    assert (~inside).any() and inside.mean() > 0.5
    assert out.mask[:, ~inside & clear].all()
    pick = inside & clear
    iu, iv = np.floor(u[pick]).astype(int), np.floor(v[pick]).astype(int)
    for b in range(2):
        assert np.array_equal(out.mask[b][pick], scene.mask[b][iv, iu])
        valid = ~scene.mask[b][iv, iu]
        assert np.array_equal(out.data[b][pick][valid], scene.data[b][iv, iu][valid])


def test_concurrent_window_reads_with_the_block_cache_agree(tmp_path):
    # Threads read overlapping windows through the shared block cache; each result equals
    # the same window read alone with the cache off.
    img = _images("array", "utm", tmp_path)
    big = grid_for(img, None, CASES[2][2])
    windows = _windows(big, 12, seed=3)
    raster.clear_block_cache()
    results: dict[int, np.ma.MaskedArray] = {}

    def work(k: int) -> None:
        for i in range(k, len(windows), 3):
            results[i] = img.read(big.window(*windows[i]))

    run_in_threads(work, 3)
    assert len(results) == len(windows)
    saved, saved_open = raster._BLOCKS, frame_warp.MAX_OPEN_FRAMES
    raster._BLOCKS = CellCache(0)
    frame_warp.MAX_OPEN_FRAMES = 0  # the references warp afresh, not from a frame left open
    frame_warp.close_frames()
    try:
        for i, w in enumerate(windows):
            _assert_same(results[i], img.read(big.window(*w)), f"window {w}")
    finally:
        raster._BLOCKS, frame_warp.MAX_OPEN_FRAMES = saved, saved_open


def test_warp_array_is_window_independent_when_the_source_covers_the_kernels():
    # The path predicted images use to resample their cell mosaics.
    scene = _scene(200)
    crs, transform = SOURCES["utm"]
    src = scene.filled(np.nan)
    img = Image.from_array(scene, transform=transform, crs=crs)
    big = grid_for(img, None, CASES[2][2])
    resamplings = [Resampling.bilinear, Resampling.nearest]
    ref = raster.warp_array(src, transform, crs, big, resamplings)
    assert 0.02 < ref.mask.mean() < 0.9
    for c, r, w, h in _windows(big, 6, seed=11):
        sub = raster.warp_array(src, transform, crs, big.window(c, r, w, h), resamplings)
        _assert_same(sub, ref[:, r : r + h, c : c + w], f"window {(c, r, w, h)}")


def test_canonical_frame_is_shared_by_every_window_of_a_lattice():
    # Tiles of one zoom share one frame (bit-identical transform) and sit on block corners.
    frames = {raster._frame(xyz_grid(14, x, y))[0] for x, y in [(8875, 6426), (8876, 6426), (1, 16000)]}
    assert len(frames) == 1
    t0, col, row = raster._frame(xyz_grid(14, 8875, 6426))
    assert col % raster.BLOCK == 0 and row % raster.BLOCK == 0
    g = Grid("EPSG:4326", Affine(1e-4, 0, 10.00003, 0, -1e-4, 45.00007), 10, 10)
    for c, r in [(3, 5), (-700, 12345), (10**6, -(10**6))]:
        t, cc, rr = raster._frame(g.window(c, r, 10, 10))
        ref_t, ref_c, ref_r = raster._frame(g)
        assert t == ref_t and (cc - ref_c, rr - ref_r) == (c, r)
    assert math.isclose(t0.a, xyz_grid(14, 0, 0).res[0])
