"""predict_image end to end with real TensorFlow/Keras models and real images.

Seam-free tiling, scale changes, NDVI exactness, fix_input_proj both ways, masks, multi-input
models, composition, the cell cache, read_many batching, concurrency and error reporting.
"""

from __future__ import annotations

import threading
import time

import keras
import numpy as np
import pytest
from affine import Affine
from rasterio.enums import Resampling

from ee_model_widgets.core.cache import CellCache
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.core.image import Image
from ee_model_widgets.core.model import Model
from ee_model_widgets.core.projection import Projection
from ee_model_widgets.core.raster import warp_array
from ee_model_widgets.core.tiling import lattice_for_request
from ee_model_widgets.errors import InputError, ModelError, TooManyCells
from tests.conftest import UTM19S, UTM_TRANSFORM
from tests.helpers import run_in_threads


def scene(
    rows=45, cols=70, bands=("red", "nir", "blue"), seed=0, nodata=None, smooth=False
) -> tuple[np.ndarray, Image]:
    """Random pixels in [0.1, 0.9] (or smooth waves, like real imagery, for resampled reads)."""
    rng = np.random.default_rng(seed)
    if smooth:
        yy, xx = np.mgrid[0:rows, 0:cols] / 25.0
        phase = rng.random(len(bands))[:, None, None] * 6
        arr = (0.5 + 0.3 * np.sin(xx + phase) * np.cos(yy - phase)).astype(np.float32)
    else:
        arr = (rng.random((len(bands), rows, cols)) * 0.8 + 0.1).astype(np.float32)
    return arr, Image.from_array(
        arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=list(bands), nodata=nodata
    )


def fcn(channels: int, seed: int = 0, out: int = 2, padding: str = "same") -> keras.Model:
    """Three 3x3 convolutions with random weights: receptive field 7x7 (3 pixels per edge).

    With 'valid' padding the model returns only the core of each tile.
    """
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((None, None, channels))
    x = keras.layers.Conv2D(8, 3, padding=padding, activation="tanh")(x)
    x = keras.layers.Conv2D(8, 3, padding=padding, activation="tanh")(x)
    x = keras.layers.Conv2D(out, 3, padding=padding)(x)
    return keras.Model(inp, x)


def whole(km: keras.Model, arr: np.ndarray, pad: int = 3) -> np.ndarray:
    """The model run on the whole image at once: (bands, rows, cols).

    The image gets the same context the tiles get beyond its edges (masked pixels are sent
    as 0): `pad` zero pixels, cropped again from a 'same'-padded model's output.
    """
    x = np.pad(arr, ((0, 0), (pad, pad), (pad, pad))).transpose(1, 2, 0)[None]
    y = np.asarray(km(x)).transpose(0, 3, 1, 2)[0]
    if y.shape[1:] != arr.shape[1:]:
        y = y[:, pad:-pad, pad:-pad]
    return y


def ndvi_fn(batch):
    a = batch["array"]
    red, nir = a[..., 0:1], a[..., 1:2]
    with np.errstate(invalid="ignore"):  # 0/0 where pixels are masked (sent as 0)
        return (nir - red) / (nir + red)


# ---- seam-free tiling ----------------------------------------------------------------------
@pytest.mark.parametrize("fix", [False, True])
def test_fcn_tiles_with_overlap_equal_whole_image(fix):
    arr, img = scene(45, 70)  # non-square, not a multiple of the tile
    km = fcn(3)
    model = Model.from_keras(
        km,
        input_tile_size=[16, 12],
        input_overlap_size=3,
        fix_input_proj=fix,
        output_bands={"o": {"type": "float", "dimensions": 1}},
    )
    pred = model.predict_image(img, cache=CellCache(1 << 24))
    assert pred.band_names == ["o_0", "o_1"]
    got = pred.to_numpy()
    expect = whole(km, arr)
    assert got.shape == expect.shape == (2, 45, 70)
    assert not got.mask.any()
    assert np.abs(got.data - expect).max() < 1e-5
    # a window across the image's bottom-right corner: edges match, outside is masked
    win = pred.read(img.grid.window(60, 40, 16, 9))
    assert np.abs(win.data[:, :5, :10] - expect[:, 40:45, 60:70]).max() < 1e-5
    assert win.mask[:, 5:, :].all() and win.mask[:, :, 10:].all()
    # a window starting mid-cell, away from the edges
    mid = pred.read(img.grid.window(7, 5, 23, 19))
    assert np.abs(mid.data - expect[:, 5:24, 7:30]).max() < 1e-5


def test_valid_padding_fcn_returning_only_the_core_equals_whole_image():
    arr, img = scene(45, 70)
    km = fcn(3, seed=1, padding="valid")
    model = Model.from_keras(
        km,
        input_tile_size=[16, 12],
        input_overlap_size=3,
        output_bands={"o": {"type": "float", "dimensions": 1}},
    )
    got = model.predict_image(img, cache=None).to_numpy()
    assert np.abs(got.data - whole(km, arr)).max() < 1e-5


def test_without_overlap_the_seams_show():
    arr, img = scene(45, 70)
    km = fcn(3)
    # fix_input_proj=True: cells start at the image's corner (False anchors them at the CRS origin)
    pred = Model.from_keras(
        km, input_tile_size=[16, 12], input_overlap_size=0, fix_input_proj=True
    ).predict_image(img, cache=None)
    diff = np.abs(pred.to_numpy().data - whole(km, arr, pad=0))
    assert diff.max() > 0.05
    # the error sits on the cell borders (cells are 16 x 12 px), not 3+ px inside the cells
    inner = diff[:, 3:9, 3:13].max()
    border = diff[:, :, 15:17].max()
    assert inner < 1e-5 and border > 0.05


# ---- scale change --------------------------------------------------------------------------
def mean_pool_model(channels: int) -> keras.Model:
    inp = keras.Input((None, None, channels))
    return keras.Model(inp, keras.layers.AveragePooling2D(2)(inp))


def test_scale_change_output_grid_values_and_masks():
    arr, _ = scene(40, 36, bands=("red", "nir"))
    arr[0, 5, 7] = np.nan  # one masked input pixel
    img = Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["red", "nir"])
    model = Model.from_keras(
        mean_pool_model(2),
        input_tile_size=8,
        input_overlap_size=2,
        output_tile_size=4,
        output_bands={"m": {"type": "float", "dimensions": 1}},
    )
    pred = model.predict_image(img, cache=None)
    g = pred.grid
    assert (g.width, g.height) == (18, 20)
    assert g.transform.a == 20 and g.transform.e == -20
    assert (g.transform.c, g.transform.f) == (500000, 7000000)
    got = pred.to_numpy()
    expect = np.nan_to_num(arr).reshape(2, 20, 2, 18, 2).mean(axis=(2, 4))
    # the output pixel over the masked input is masked (both bands: min of the input masks)
    assert got.mask[:, 2, 3].all()
    assert got.mask.sum() == 2
    ok = ~got.mask
    assert np.abs(got.data[ok] - expect[ok]).max() < 1e-6


def test_scale_change_on_map_tiles_samples_inputs_finer():
    seen = []

    def fn(batch):
        seen.append(batch["array"].shape)
        a = batch["array"]
        return a.reshape(a.shape[0], a.shape[1] // 2, 2, a.shape[2] // 2, 2, a.shape[3]).mean(axis=(2, 4))

    _, img = scene(60, 60)
    model = Model.from_callable(
        fn,
        input_tile_size=16,
        output_tile_size=8,
        output_bands={"m": {"type": "float", "dimensions": 1, "shape": [3]}},
    )
    pred = model.predict_image(img, cache=None)
    lon, lat = 0, 0
    g = pred.grid
    # a 3857 grid at 40 m: the model sees its inputs at 20 m, returns 40 m cells
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(UTM19S, "EPSG:3857", *g.bounds)
    req = Grid("EPSG:3857", Affine(40, 0, w, 0, -40, n), int((e - w) // 40), int((n - s) // 40))
    out = pred.read(req)
    assert all(shape[1:3] == (16, 16) for shape in seen)
    lattice, _ = lattice_for_request(req, (16, 16), (0, 0), (8, 8))
    assert lattice.base.a == pytest.approx(20)
    assert (~out.mask).sum() > 0.5 * out[0].size
    del lon, lat


# ---- NDVI exactness ----------------------------------------------------------------------
def test_ndvi_callable_is_exact():
    arr, img = scene(33, 50)
    pred = Model.from_callable(
        ndvi_fn, input_tile_size=16, output_bands={"ndvi": {"type": "float"}}
    ).predict_image(img, cache=None)
    expect = (arr[1] - arr[0]) / (arr[1] + arr[0])
    got = pred.to_numpy()
    assert got.shape == (1, 33, 50)
    np.testing.assert_array_equal(got.data[0], expect)


def keras_ndvi_per_band() -> keras.Model:
    red = keras.Input((None, None, 1), name="red")
    nir = keras.Input((None, None, 1), name="nir")
    out = keras.layers.Lambda(lambda t: (t[1] - t[0]) / (t[1] + t[0]))([red, nir])
    return keras.Model({"red": red, "nir": nir}, out)


def test_ndvi_keras_multi_input_by_band_name():
    # bands in another order than the model's inputs, plus a band the model does not use
    arr, img = scene(30, 41, bands=("blue", "nir", "red"))
    model = Model.from_keras(
        keras_ndvi_per_band(), input_tile_size=[16, 8], output_bands={"ndvi": {"type": "float"}}
    )
    pred = model.predict_image(img, cache=None)
    expect = (arr[1] - arr[2]) / (arr[1] + arr[2])
    got = pred.to_numpy()
    assert pred.band_names == ["ndvi"]
    assert np.abs(got.data[0] - expect).max() < 1e-6


def test_multi_input_unknown_band_lists_the_image_bands():
    _, img = scene(bands=("B4", "B8"))
    model = Model.from_keras(keras_ndvi_per_band(), input_tile_size=16)
    with pytest.raises(InputError, match=r"input\(s\) \['nir', 'red'\].*The image has bands \['B4', 'B8'\]"):
        model.predict_image(img)


# ---- fix_input_proj -------------------------------------------------------------------------
class Recorder:
    """An NDVI callable that keeps every batch it was given."""

    def __init__(self):
        self.batches: list[np.ndarray] = []
        self.lock = threading.Lock()

    def __call__(self, batch):
        with self.lock:
            self.batches.append(batch["array"].copy())
        return ndvi_fn(batch)

    @property
    def instances(self) -> np.ndarray:
        return np.concatenate(self.batches) if self.batches else np.zeros((0,))


def native_cells(arr: np.ndarray, tile: int, ov: int) -> list[np.ndarray]:
    """Every native cell input of `arr` (C, H, W), with overlap, outside = 0."""
    c, h, w = arr.shape
    nr, nc = -(-h // tile), -(-w // tile)
    pad = np.zeros((c, nr * tile + 2 * ov, nc * tile + 2 * ov), np.float32)
    pad[:, ov : ov + h, ov : ov + w] = arr
    return [
        pad[:, j * tile : j * tile + tile + 2 * ov, i * tile : i * tile + tile + 2 * ov].transpose(1, 2, 0)
        for j in range(nr)
        for i in range(nc)
    ]


def mercator_grid(img: Image, res: float, shrink: float = 0.2) -> Grid:
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(UTM19S, "EPSG:3857", *img.grid.bounds)
    dx, dy = (e - w) * shrink, (n - s) * shrink
    w, e, s, n = w + dx, e - dx, s + dy, n - dy
    return Grid(
        "EPSG:3857", Affine(res, 0, w, 0, -res, n), max(1, int((e - w) / res)), max(1, int((n - s) / res))
    )


def test_fix_input_proj_true_model_sees_native_cells_whatever_the_request():
    arr, img = scene(48, 64, bands=("red", "nir"))
    rec = Recorder()
    model = Model.from_callable(
        rec,
        input_tile_size=16,
        input_overlap_size=2,
        fix_input_proj=True,
        output_bands={"ndvi": {"type": "float"}},
    )
    pred = model.predict_image(img, cache=CellCache(1 << 24))
    native = native_cells(arr, 16, 2)
    coarse = pred.read(mercator_grid(img, 25.0))
    fine = pred.read(mercator_grid(img, 6.0))
    for inst in rec.instances:
        assert any(np.array_equal(inst, cell) for cell in native), "model saw a non-native window"
    # both requests are the native prediction resampled (nearest, Earth Engine's default,
    # the same warp as every image read): compare with warping the exact native NDVI ourselves
    expect_native = (arr[1] - arr[0]) / (arr[1] + arr[0])
    for g, got in ((mercator_grid(img, 25.0), coarse), (mercator_grid(img, 6.0), fine)):
        want = warp_array(expect_native[None], UTM_TRANSFORM, UTM19S, g, [Resampling.nearest])
        both = ~got.mask[0] & ~want.mask[0]
        assert both.sum() > 0.8 * got[0].size
        assert np.abs(got.data[0][both] - want.data[0][both]).max() < 1e-5
    # every native cell was computed once; the native grid now costs no model call
    calls = model.stats.calls
    native_read = pred.to_numpy()
    assert model.stats.calls == calls
    np.testing.assert_array_equal(native_read.data[0], expect_native)


def test_fix_input_proj_false_model_sees_the_request_grid():
    # big enough that every cell window stays inside the image (GDAL's edge handling of
    # partial kernels depends on the window, which is not what this test is about)
    arr, img = scene(200, 200, bands=("red", "nir"), smooth=True)
    rec = Recorder()
    model = Model.from_callable(
        rec, input_tile_size=16, input_overlap_size=2, output_bands={"ndvi": {"type": "float"}}
    )
    pred = model.predict_image(img, cache=None)
    req = mercator_grid(img, 25.0, shrink=0.3)
    out = pred.read(req)
    lattice, off = lattice_for_request(req, (16, 16), (2, 2), (16, 16))
    assert lattice.base.a == pytest.approx(25.0)  # the model works at the request's 25 m
    i0, j0 = off[0] // 16, off[1] // 16
    expected_input = img.read(lattice.input_grid(i0, j0)).filled(0).transpose(1, 2, 0)
    assert any(np.abs(inst - expected_input).max() < 1e-4 for inst in rec.instances)
    assert all(inst.shape == (20, 20, 2) for inst in rec.instances)
    # per-pixel model: the prediction is NDVI of the image sampled on the request grid
    src = img.read(req)
    both = ~out.mask[0] & ~src.mask.any(0)
    want = (src.data[1] - src.data[0]) / (src.data[1] + src.data[0])
    # (not bit-equal: GDAL resamples the whole request and the cells in different windows)
    assert np.abs(out.data[0][both] - want[both]).max() < 1e-3


def test_a_resampled_input_reaches_the_model_interpolated_and_is_cached_apart():
    # Earth Engine reprojects a model's input with nearest neighbour unless the image was
    # `resample()`d: the model on the map's 6 m grid sees picked 10 m values, or bilinear ones.
    arr, img = scene(200, 200, bands=("red", "nir"), smooth=True)
    rec = Recorder()
    model = Model.from_callable(
        rec, input_tile_size=16, input_overlap_size=2, output_bands={"ndvi": {"type": "float"}}
    )
    cache = CellCache(1 << 26)
    req = mercator_grid(img, 6.0, shrink=0.4)
    near = model.predict_image(img, cache=cache).read(req)
    seen = len(rec.batches)
    smooth = model.predict_image(img.resample("bilinear"), cache=cache).read(req)
    assert len(rec.batches) > seen, "the resampled input was served the nearest input's cells"
    picked, interpolated = np.concatenate(rec.batches[:seen]), np.concatenate(rec.batches[seen:])
    assert np.isin(picked[picked != 0], arr).all()
    assert np.isin(interpolated[interpolated != 0], arr).mean() < 0.1
    for out, mode in ((near, "nearest"), (smooth, "bilinear")):
        src = img.read(req, resampling=mode)
        both = ~out.mask[0] & ~src.mask.any(0)
        assert both.sum() > 0.8 * both.size
        want = (src.data[1] - src.data[0]) / (src.data[1] + src.data[0])
        assert np.abs(out.data[0][both] - want[both]).max() < 1e-3, mode
    assert np.abs(near.data[0] - smooth.data[0]).max() > 3e-3  # > the tolerance above


# ---- masks and nodata ---------------------------------------------------------------------
def test_nodata_pixels_are_sent_as_zero_and_masked_in_the_output():
    arr, _ = scene(20, 20, bands=("red", "nir"))
    arr[0, 3, 4] = -9999
    arr[1, 10, 11] = -9999
    img = Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["red", "nir"], nodata=-9999)
    rec = Recorder()
    model = Model.from_callable(
        rec, input_tile_size=8, input_overlap_size=1, output_bands={"ndvi": {"type": "float"}}
    )
    got = model.predict_image(img, cache=None).to_numpy()
    assert got.mask[0].sum() == 2 and got.mask[0, 3, 4] and got.mask[0, 10, 11]
    inputs = rec.instances
    assert not (inputs == -9999).any()
    # cell (0, 0) with 1 px overlap: pixel (3, 4) sits at (4, 5) of its input, red channel = 0
    first = inputs[0]
    assert first[4, 5, 0] == 0 and first[4, 5, 1] > 0
    # outside the image (the overlap beyond the top-left corner) is 0 too
    assert (first[0, :, :] == 0).all()


def test_cells_with_no_valid_pixel_do_not_call_the_model():
    arr, _ = scene(32, 32, bands=("red", "nir"))
    arr[:, :16, :16] = np.nan  # the whole first cell
    img = Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["red", "nir"])
    model = Model.from_callable(ndvi_fn, input_tile_size=16, output_bands={"ndvi": {"type": "float"}})
    got = model.predict_image(img, cache=None).to_numpy()
    assert model.stats.instances == 3
    assert got.mask[0, :16, :16].all() and not got.mask[0, 16:, :].any()


# ---- cache, read_many, concurrency ----------------------------------------------------------
def test_second_read_hits_the_cache_and_does_not_call_the_model():
    _, img = scene(40, 40, bands=("red", "nir"))
    cache = CellCache(1 << 24)
    model = Model.from_callable(ndvi_fn, input_tile_size=16, output_bands={"ndvi": {"type": "float"}})
    pred = model.predict_image(img, cache=cache)
    first = pred.to_numpy()
    calls, hits = model.stats.calls, cache.hits
    second = pred.to_numpy()
    assert model.stats.calls == calls
    assert cache.hits - hits == 9  # 3 x 3 cells
    np.testing.assert_array_equal(first.data, second.data)
    # a new PredictedImage of the same model and image shares the cells
    again = model.predict_image(img, cache=cache).read(img.grid.window(0, 0, 16, 16))
    assert model.stats.calls == calls
    np.testing.assert_array_equal(again.data, first.data[:, :16, :16])


def test_read_many_batches_all_tiles_into_one_call():
    _, img = scene(200, 200, bands=("red", "nir"), smooth=True)
    model = Model.from_callable(
        ndvi_fn, input_tile_size=64, output_bands={"ndvi": {"type": "float"}}, max_batch_size=None
    )
    pred = model.predict_image(img, cache=None)
    lon_lat_tiles = _tiles_over(img, zoom=16)
    assert len(lon_lat_tiles) >= 2
    grids = [xyz_grid(16, x, y) for x, y in lon_lat_tiles]
    before = model.stats.calls
    many = pred.read_many(grids)
    assert model.stats.calls - before == 1
    for g, got in zip(grids, many):
        # resampled inputs: GDAL's values depend slightly on the window read (block vs tile)
        np.testing.assert_allclose(got.filled(-1), pred.read(g).filled(-1), atol=1e-4)


def _tiles_over(img: Image, zoom: int) -> list[tuple[int, int]]:
    import math

    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(UTM19S, "EPSG:4326", *img.grid.bounds)

    def tile(lon, lat):
        k = 2**zoom
        x = int((lon + 180) / 360 * k)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * k)
        return x, y

    x0, y0 = tile(w, n)
    x1, y1 = tile(e, s)
    return [(x, y) for x in range(x0, x1 + 1) for y in range(y0, y1 + 1)]


def test_concurrent_reads_compute_each_cell_once():
    _, img = scene(32, 32, bands=("red", "nir"))
    started = threading.Event()

    def slow(batch):
        started.set()
        time.sleep(0.3)  # keep the cells in flight while the other threads arrive
        return ndvi_fn(batch)

    model = Model.from_callable(slow, input_tile_size=16, output_bands={"ndvi": {"type": "float"}})
    pred = model.predict_image(img, cache=CellCache(1 << 24))
    results = []
    run_in_threads(lambda _: results.append(pred.to_numpy()), 4)
    assert model.stats.instances == 4  # 2 x 2 cells, each computed once
    for r in results[1:]:
        np.testing.assert_array_equal(r.data, results[0].data)


# ---- composition, categorical outputs, guards, errors -------------------------------------
def test_predictions_compose():
    arr, img = scene(30, 30, bands=("red", "nir"))
    ndvi = Model.from_callable(ndvi_fn, input_tile_size=16, output_bands={"ndvi": {"type": "float"}})
    threshold = Model.from_callable(
        lambda b: (b["array"] > 0).astype(np.float32),
        input_tile_size=8,
        input_overlap_size=1,
        output_bands={"green": {"type": "uint8"}},
    )
    second = threshold.predict_image(ndvi.predict_image(img, cache=None), cache=None)
    assert second.band_names == ["green"] and second.categorical_bands == frozenset({"green"})
    got = second.to_numpy()
    expect = ((arr[1] - arr[0]) / (arr[1] + arr[0]) > 0).astype(np.float32)
    np.testing.assert_array_equal(got.data[0], expect)


def test_integer_outputs_are_rounded_and_clipped():
    _, img = scene(8, 8, bands=("a",))
    model = Model.from_callable(
        lambda b: np.full(b["array"].shape, 300.6, np.float32),
        input_tile_size=8,
        output_bands={"c": {"type": "uint8"}},
    )
    assert model.predict_image(img, cache=None).to_numpy().data.max() == 255


def test_cell_count_and_max_cells_guard():
    _, img = scene(64, 64, bands=("red", "nir"))
    model = Model.from_callable(ndvi_fn, input_tile_size=8, output_bands={"ndvi": {"type": "float"}})
    pred = model.predict_image(img, cache=None, max_cells=10)
    assert pred.cell_count(img.grid) == 64
    assert pred.cell_count(img.grid.window(0, 0, 16, 16)) == 4
    assert pred.cell_count(img.grid.window(1000, 1000, 16, 16)) == 0  # outside: nothing to run
    calls = model.stats.calls
    with pytest.raises(InputError, match=r"needs 64 model cells .*max_cells=10"):
        pred.to_numpy()
    assert model.stats.calls == calls
    out = pred.read(img.grid.window(1000, 1000, 16, 16))
    assert out.mask.all()


def test_too_many_cells_is_typed_and_names_the_fix():
    _, img = scene(64, 64, bands=("red", "nir"))
    model = Model.from_callable(
        ndvi_fn, input_tile_size=8, fix_input_proj=True, output_bands={"ndvi": {"type": "float"}}
    )
    pred = model.predict_image(img, cache=None, max_cells=10)
    with pytest.raises(TooManyCells) as info:
        pred.read(img.grid)
    err = info.value
    assert isinstance(err, InputError) and (err.cells, err.limit) == (64, 10)
    assert "zoom in" in str(err) and "predict_image(..., max_cells=N)" in str(err)
    # A map tile's tighter budget (fixInputProj: native cells) is refused in the plan, with its own fix.
    plan = pred.plan([img.grid, img.grid.window(0, 0, 16, 16)], max_cells=2)
    assert plan.cells == (64, 4)
    refusal, small = plan.refusals
    assert isinstance(refusal, TooManyCells) and small is not None and small.limit == 2
    assert "zoom in" in str(refusal) and "max_cells_per_tile" in str(refusal)
    calls = model.stats.calls
    with pytest.raises(TooManyCells):
        pred.read_plan(plan)
    (ok,) = pred.read_plan(pred.plan([img.grid.window(0, 0, 16, 16)], max_cells=4))
    assert ok.shape == (1, 16, 16) and not ok.mask.all()
    assert model.stats.calls > calls


def test_model_that_raises_names_its_message_and_the_cell():
    _, img = scene(32, 32, bands=("red", "nir"))

    def flaky(batch):
        a = batch["array"]
        if (a[:, 0, 0, 0] == 0).any():  # only the cells whose overlap leaves the image
            raise ValueError("sensor saturated")
        return ndvi_fn(batch)

    model = Model.from_callable(
        flaky,
        input_tile_size=16,
        input_overlap_size=1,
        fix_input_proj=True,
        output_bands={"ndvi": {"type": "float"}},
    )
    pred = model.predict_image(img, cache=None)
    with pytest.raises(
        ModelError,
        match=r"raised ValueError: sensor saturated.*cell \(i=0, j=0\) covering \(500000, 6\.99984e\+06, 500160, 7e\+06\) in EPSG:32719",
    ) as info:
        pred.to_numpy()
    assert info.value.cell == (0, 0)
    assert info.value.bounds == (500000.0, 6999840.0, 500160.0, 7000000.0)


def test_output_of_the_wrong_size_says_what_was_expected():
    _, img = scene(16, 16, bands=("red", "nir"))
    model = Model.from_callable(
        lambda b: b["array"][:, :8, :8, :1], input_tile_size=16, output_bands={"o": {"type": "float"}}
    )
    with pytest.raises(ModelError, match=r"output 'o' is 8x8 pixels per tile .* expected 16x16"):
        model.predict_image(img, cache=None).to_numpy()


def test_predict_image_takes_images_only():
    model = Model.from_callable(ndvi_fn, input_tile_size=16, output_bands={"o": {"type": "float"}})
    with pytest.raises(InputError, match="needs an emw.Image, got ndarray"):
        model.predict_image(np.zeros((2, 4, 4)))


def test_export_streams_without_filling_the_shared_cache(tmp_path):
    arr, img = scene(40, 40, bands=("red", "nir"))
    cache = CellCache(1 << 24)
    model = Model.from_callable(ndvi_fn, input_tile_size=16, output_bands={"ndvi": {"type": "float"}})
    pred = model.predict_image(img, cache=cache)
    path = pred.export(tmp_path / "ndvi.tif", progress=False)
    assert len(cache) == 0
    back = Image.open(path)
    assert back.band_names == ["ndvi"]
    np.testing.assert_array_equal(back.to_numpy().data[0], (arr[1] - arr[0]) / (arr[1] + arr[0]))


def test_explicit_proj_defines_the_native_grid():
    _, img = scene(40, 40, bands=("red", "nir"))
    proj = Projection(UTM19S).at_scale(20)  # anchored at the CRS origin, 20 m
    model = Model.from_callable(
        ndvi_fn, input_tile_size=8, proj=proj, fix_input_proj=True, output_bands={"ndvi": {"type": "float"}}
    )
    pred = model.predict_image(img, cache=None)
    g = pred.grid
    assert g.transform.a == 20 and (g.width, g.height) == (20, 20)
    out = pred.to_numpy()
    assert (~out.mask).sum() == 400


def test_output_tile_larger_than_input_upsamples():
    arr, img = scene(16, 24, bands=("a",))
    model = Model.from_callable(
        lambda b: np.repeat(np.repeat(b["array"], 2, axis=1), 2, axis=2),
        input_tile_size=8,
        input_overlap_size=1,
        output_tile_size=16,
        output_bands={"up": {"type": "float"}},
    )
    pred = model.predict_image(img, cache=None)
    assert pred.grid.transform.a == 5 and (pred.grid.width, pred.grid.height) == (48, 32)
    np.testing.assert_array_equal(pred.to_numpy().data[0], np.repeat(np.repeat(arr[0], 2, axis=0), 2, axis=1))


def test_regions_outside_the_prediction_are_refused_like_any_image():
    from ee_model_widgets.errors import RegionError

    _, img = scene(16, 16, bands=("red", "nir"))
    pred = Model.from_callable(ndvi_fn, input_tile_size=8, output_bands={"ndvi": "float"}).predict_image(
        img, cache=None
    )
    with pytest.raises(RegionError, match="does not intersect the image"):
        pred.to_numpy(region=(10.0, 10.0, 10.1, 10.1))
