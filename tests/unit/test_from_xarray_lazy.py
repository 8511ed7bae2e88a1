"""`Image.from_xarray` on lazy dask-backed data: windows are computed, never the whole array.

Laziness is observed for real: the dask graph's block function counts the blocks it is
asked for. Values are compared with the numpy array the DataArray was made from.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.core.region import lonlat_bounds
from ee_model_widgets.errors import InputError

xr = pytest.importorskip("xarray")
dask_array = pytest.importorskip("dask.array")
pytest.importorskip("rioxarray")

T = Affine(10, 0, 500000, 0, -10, 4000000)


class CountingSource:
    """A (bands, rows, cols) numpy array behind dask: counts the blocks computed."""

    def __init__(self, values: np.ndarray, chunks=(1, 100, 100)):
        self.values = values
        self.blocks = 0
        self._lock = threading.Lock()
        self.array = dask_array.map_blocks(
            self._block, dtype=values.dtype, chunks=dask_array.core.normalize_chunks(chunks, values.shape)
        )

    def _block(self, block_info=None):
        (b0, b1), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        with self._lock:
            self.blocks += 1
        return self.values[b0:b1, r0:r1, c0:c1]


def lazy_dataarray(values, names=("red", "nir"), chunks=(1, 100, 100)):
    src = CountingSource(values, chunks)
    h, w = values.shape[1:]
    x = T.c + (np.arange(w) + 0.5) * T.a
    y = T.f + (np.arange(h) + 0.5) * T.e
    da = xr.DataArray(src.array, dims=("band", "y", "x"), coords={"band": list(names), "y": y, "x": x})
    return da.rio.write_crs("EPSG:32633"), src


@pytest.fixture
def values():
    rng = np.random.default_rng(0)
    v = rng.random((2, 400, 500)).astype(np.float32)
    v[:, 10:20, 30:40] = np.nan  # no data
    return v


def test_a_window_computes_only_the_chunks_under_it(values):
    da, src = lazy_dataarray(values)
    img = emw.Image.from_xarray(da)
    assert src.blocks == 0  # building the image computes nothing
    assert type(img).__name__ == "XarrayImage" and img.band_names == ["red", "nir"]
    window = img.grid.window(120, 130, 50, 40)  # inside chunk (row 1, col 1)
    out = img.read(window, ["nir"])
    assert src.blocks == 1  # one chunk of one band out of 2 x 4 x 5 = 40
    np.testing.assert_array_equal(out.data[0], values[1, 130:170, 120:170])
    assert not out.mask.any()


def test_to_numpy_map_tiles_and_band_math_match_the_eager_image(values):
    da, src = lazy_dataarray(values)
    lazy = emw.Image.from_xarray(da)
    eager = emw.Image.from_array(values, transform=T, crs="EPSG:32633", band_names=["red", "nir"])
    a, b = lazy.to_numpy(), eager.to_numpy()
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.mask[:, 10:20, 30:40].all() and a.mask.sum() == 2 * 100
    # A reprojected (web-map) read warps the same way as the eager image.
    w, s, e, n = lonlat_bounds(lazy.grid)
    import math

    z = 15
    x = int(((w + e) / 2 + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians((s + n) / 2))) / math.pi) / 2 * 2**z)
    src.blocks = 0
    t_lazy, t_eager = lazy.tile(z, x, y), eager.tile(z, x, y)
    assert 0 < src.blocks < 40
    np.testing.assert_array_equal(t_lazy.mask, t_eager.mask)
    np.testing.assert_allclose(t_lazy.data, t_eager.data, rtol=1e-6)
    assert (~t_lazy.mask).sum() > 1000
    ndvi = lazy.normalized_difference(["nir", "red"])
    r, nn = values[0], values[1]
    got = ndvi.to_numpy()
    expected = (nn - r) / (nn + r)
    ok = ~got.mask[0]
    np.testing.assert_allclose(got.data[0][ok], expected[ok], rtol=1e-6)


def test_a_zoomed_out_read_decimates_window_by_window(values):
    da, _src = lazy_dataarray(values)
    lazy = emw.Image.from_xarray(da)
    eager = emw.Image.from_array(values, transform=T, crs="EPSG:32633", band_names=["red", "nir"])
    coarse = lazy.grid.scaled(0.1, 0.1)  # 10x coarser: a decimated level
    a, b = lazy.read(coarse), eager.read(coarse)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.data, b.data, rtol=1e-5)


def test_datasets_become_bands_and_nodata_is_masked(values):
    da, _ = lazy_dataarray(values)
    ds = xr.Dataset({"red": da.sel(band="red", drop=True), "nir": da.sel(band="nir", drop=True)})
    ds = ds.rio.write_crs("EPSG:32633")
    img = emw.Image.from_xarray(ds)
    assert img.band_names == ["red", "nir"]
    np.testing.assert_array_equal(img.to_numpy().data[1][:5, :5], values[1, :5, :5])
    filled = xr.where(da.isnull(), -9999.0, da).rio.write_crs("EPSG:32633").rio.write_nodata(-9999.0)
    masked = emw.Image.from_xarray(filled).to_numpy()
    assert masked.mask[:, 10:20, 30:40].all() and masked.mask.sum() == 200


def test_what_cannot_be_windowed_lazily_is_refused_with_the_way_out(values):
    da, src = lazy_dataarray(values)
    cube = xr.concat([da, da], dim="time")
    with pytest.raises(InputError, match=r"dimensions \{'time': 2.*isel\(time=0\)"):
        emw.Image.from_xarray(cube)
    bent = da.assign_coords(x=np.cumsum(np.linspace(1, 20, da.sizes["x"])) + 500000)
    with pytest.raises(InputError, match="not evenly spaced"):
        emw.Image.from_xarray(bent)
    assert src.blocks == 0  # none of the refusals computed anything


def test_the_storage_dtype_is_kept_for_exports(values):
    da, _ = lazy_dataarray((values * 200).astype(np.uint8))
    assert emw.Image.from_xarray(da).band_types == {"red": np.dtype("uint8"), "nir": np.dtype("uint8")}
