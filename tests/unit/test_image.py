"""Images from files and arrays: values, masks, band names, reprojection, errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.warp import reproject

from ee_model_widgets import Image, Projection
from ee_model_widgets.core.grid import Grid, xyz_grid
from ee_model_widgets.core.region import grid_for
from ee_model_widgets.errors import ImageReadError, InputError, ProjectionError, RegionError
from tests.conftest import UTM_TRANSFORM
from tests.helpers import run_in_threads

RNG = np.random.default_rng(42)


def _scene(bands=2, rows=60, cols=80):
    return RNG.random((bands, rows, cols)).astype(np.float32)


# ---- files ----------------------------------------------------------------------------------
def test_open_reads_values_and_band_descriptions(write_geotiff):
    data = _scene()
    img = Image.open(write_geotiff(data, descriptions=["red", "nir"]))
    assert img.band_names == ["red", "nir"]
    assert img.grid == Grid("EPSG:32719", UTM_TRANSFORM, 80, 60)
    assert img.projection == Projection("EPSG:32719", UTM_TRANSFORM)
    out = img.read(img.grid)
    assert out.dtype == np.float32 and out.shape == (2, 60, 80)
    assert not out.mask.any()
    np.testing.assert_array_equal(out.data, data)
    np.testing.assert_array_equal(img.read(img.grid, ["nir"]).data[0], data[1])


def test_open_without_descriptions_names_bands_b1_to_bn(write_geotiff):
    img = Image.open(write_geotiff(_scene(3)))
    assert img.band_names == ["B1", "B2", "B3"]
    assert Image.open(write_geotiff(_scene(2), name="x.tif"), band_names=["a", "b"]).band_names == ["a", "b"]
    with pytest.raises(InputError, match="3 band"):
        Image.open(write_geotiff(_scene(3), name="y.tif"), band_names=["a"])


def test_repeated_band_descriptions_name_the_bands_b1_to_bn_and_say_so(write_geotiff):
    path = write_geotiff(_scene(2), descriptions=["red", "red"])
    with pytest.warns(
        UserWarning, match=r"\['red', 'red'\] repeat a name, so the bands are named \['B1', 'B2'\]"
    ):
        img = Image.open(path)
    assert img.band_names == ["B1", "B2"]
    assert Image.open(path, band_names=["red", "red_2"]).band_names == ["red", "red_2"]


def test_nodata_becomes_the_mask(write_geotiff):
    data = (np.arange(12, dtype=np.int16).reshape(1, 3, 4)) * 10
    data[0, 1, 2] = -9999
    out = Image.open(write_geotiff(data, nodata=-9999)).to_numpy()
    assert out.mask.sum() == 1 and out.mask[0, 1, 2]
    assert out[0, 0, 3] == 30


def test_internal_mask_becomes_the_mask_of_every_band(write_geotiff):
    data = _scene(2, 4, 5)
    mask = np.zeros((4, 5), bool)
    mask[0, :] = True
    out = Image.open(write_geotiff(data, mask=mask)).to_numpy()
    assert out.mask[:, 0, :].all() and not out.mask[:, 1:, :].any()
    np.testing.assert_array_equal(out.data[:, 1:], data[:, 1:])


def test_window_partly_outside_is_masked_outside(write_geotiff):
    data = _scene(1, 10, 10)
    img = Image.open(write_geotiff(data))
    out = img.read(img.grid.window(-2, 5, 6, 8))
    assert out.shape == (1, 8, 6)
    assert out.mask[:, :, :2].all() and out.mask[:, 5:, :].all()
    np.testing.assert_array_equal(out.data[0, :5, 2:], data[0, 5:, :4])
    assert img.read(img.grid.window(100, 100, 4, 4)).mask.all()


@pytest.mark.parametrize(
    "mode, resampling",
    [(None, Resampling.nearest), ("bilinear", Resampling.bilinear), ("bicubic", Resampling.cubic)],
)
def test_reading_in_another_crs_matches_rasterio_reproject(write_geotiff, mode, resampling):
    # Earth Engine's rule: nearest neighbour unless the image is `resample(...)`d. Upsampling
    # (8 m pixels from 10 m), where GDAL's kernel does not depend on how it estimates the
    # scale; both sides use our 1e-3 px transformer error (reproject's default is 0.125 px,
    # enough to move a nearest pick). The masks must agree exactly.
    data = _scene(2, 50, 70)
    path = write_geotiff(data)
    img = Image.open(path)
    if mode is not None:
        img = img.resample(mode)
    grid = grid_for(img, None, Projection("EPSG:4326").at_scale(8))
    ours = img.read(grid)
    ref = np.full((2, grid.height, grid.width), np.nan, np.float32)
    with rasterio.open(path) as ds:
        reproject(
            rasterio.band(ds, [1, 2]),
            ref,
            dst_transform=grid.transform,
            dst_crs=grid.crs,
            dst_nodata=np.nan,
            resampling=resampling,
            tolerance=1e-3,
        )
    assert (ours.mask == np.isnan(ref)).all()
    np.testing.assert_allclose(ours.data[~ours.mask], ref[~np.isnan(ref)], atol=2e-3)
    picked = np.isin(ours.compressed(), data).mean()
    assert picked == 1.0 if resampling is Resampling.nearest else picked < 0.1


def test_resample_keeps_the_image_and_a_read_may_still_name_its_resampling(write_geotiff):
    data = _scene(2, 50, 70)
    img = Image.open(write_geotiff(data))
    smooth = img.resample()  # EE's default mode: bilinear
    assert smooth.band_names == img.band_names and smooth.grid == img.grid
    grid = grid_for(img, None, Projection("EPSG:4326").at_scale(8))
    np.testing.assert_array_equal(smooth.read(grid, resampling="nearest"), img.read(grid))
    np.testing.assert_array_equal(img.read(grid, resampling="bilinear"), smooth.read(grid))
    assert not np.array_equal(smooth.read(grid), img.read(grid))
    # On the native lattice there is nothing to resample.
    np.testing.assert_array_equal(smooth.read(img.grid), img.read(img.grid))
    with pytest.raises(InputError, match="Unknown resampling 'trilinear'.*bilinear"):
        img.resample("trilinear")


def test_coarse_reads_use_the_files_overviews(write_geotiff):
    # Overviews built from ones, then the full-res data overwritten with fives: a read
    # 8x coarser returns ones only if GDAL took the overview instead of the full data.
    path = write_geotiff(np.ones((1, 512, 512), np.float32), tiled=True)
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4, 8], Resampling.average)
    with rasterio.open(path, "r+") as ds:
        ds.write(np.full((1, 512, 512), 5, np.float32))
    img = Image.open(path)
    assert float(img.read(img.grid).mean()) == 5.0
    coarse = img.to_numpy(proj=Projection("EPSG:32719", UTM_TRANSFORM).at_scale(80))
    assert coarse.shape == (1, 64, 64)
    assert float(coarse.mean()) == 1.0


def test_categorical_bands_stay_classes_by_default_and_zoomed_out(write_geotiff):
    classes = np.repeat(np.repeat(np.array([[0, 1], [2, 3]], np.uint8), 5, 0), 5, 1)
    data = np.stack([classes, classes]).astype(np.uint8)
    img = Image.open(write_geotiff(data, descriptions=["label", "value"]), categorical=["label"])
    assert img.categorical_bands == {"label"}
    shifted = Grid("EPSG:32719", UTM_TRANSFORM @ Affine.translation(0.5, 0.5), 9, 9)
    out = img.read(shifted)
    assert set(np.unique(out.compressed())) <= {0, 1, 2, 3}  # nearest: EE's default
    mixed = img.resample("bilinear").read(shifted)
    assert not set(np.unique(mixed[1].compressed())) <= {0, 1, 2, 3}  # bilinear mixes values


def test_corrupt_file_raises_image_read_error_with_path_and_gdal_message(tmp_path):
    bad = tmp_path / "broken.tif"
    bad.write_bytes(b"II*\x00this is not really a tiff" * 10)
    with pytest.raises(ImageReadError) as exc:
        Image.open(bad)
    assert str(bad) in str(exc.value) and "GDAL says" in str(exc.value)


def test_truncated_file_raises_image_read_error_on_read(write_geotiff, tmp_path):
    path = write_geotiff(RNG.random((1, 256, 256)).astype(np.float32), compress="deflate", tiled=True)
    blob = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ImageReadError, match="cut.tif"):
        img = Image.open(cut)
        img.to_numpy()


def test_missing_file_raises_image_read_error(tmp_path):
    with pytest.raises(ImageReadError, match="No such file"):
        Image.open(tmp_path / "nope.tif")


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_file_without_crs_is_refused(tmp_path):
    path = tmp_path / "nocrs.tif"
    with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(ImageReadError, match="no coordinate reference system"):
        Image.open(path)


def test_concurrent_reads_from_threads_agree(write_geotiff):
    data = _scene(2, 64, 64)
    img = Image.open(write_geotiff(data))
    grid = grid_for(img, None, Projection("EPSG:3857").at_scale(7))
    expected = img.read(grid)
    results = []

    def work(_):
        for _ in range(5):
            results.append(img.read(grid))

    run_in_threads(work, 4)
    assert len(results) == 20
    for r in results:
        np.testing.assert_array_equal(r.filled(-1), expected.filled(-1))


# ---- arrays -----------------------------------------------------------------------------------
def test_from_array_keeps_masked_array_masks_nan_and_nodata():
    data = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    data[0, 0, 0] = np.nan
    data[1, 2, 3] = -1
    m = np.ma.MaskedArray(data, mask=np.zeros_like(data, bool))
    m.mask[0, 1, 1] = True
    img = Image.from_array(m, transform=UTM_TRANSFORM, crs="EPSG:32719", band_names=["a", "b"], nodata=-1)
    out = img.to_numpy()
    assert out.dtype == np.float32
    assert sorted(map(tuple, np.argwhere(out.mask))) == [(0, 0, 0), (0, 1, 1), (1, 2, 3)]
    assert out[1, 0, 0] == 12


def test_from_array_2d_is_one_band_and_does_not_alias_the_input():
    arr = np.ones((3, 4))
    img = Image.from_array(arr, transform=UTM_TRANSFORM, crs=32719)
    arr[:] = 7
    assert img.band_names == ["B1"]
    assert float(img.to_numpy().max()) == 1.0


def test_from_array_masks_do_not_leak_into_bilinear_values():
    data = np.full((1, 20, 20), 100.0)
    data[0, :, 10:] = -1e6  # masked: must not pull neighbours down
    img = Image.from_array(np.ma.MaskedArray(data, mask=data < 0), transform=UTM_TRANSFORM, crs="EPSG:32719")
    out = img.read(img.grid.scaled(3, 3))  # finer grid, bilinear
    assert out.compressed().min() == pytest.approx(100.0)
    assert out.mask[0, :, 33:].all()


@pytest.mark.parametrize("mode, resampling", [(None, Resampling.nearest), ("bilinear", Resampling.bilinear)])
def test_from_array_reprojection_matches_rasterio(mode, resampling):
    data = _scene(1, 40, 40)
    img = Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719")
    if mode is not None:
        img = img.resample(mode)
    # The z17 web tile (1.2 m pixels) over the scene's south-west corner: partly on it.
    w, s, _, _ = img.bounds
    n = 2**17
    x = int((w + 180) / 360 * n)
    y = int((1 - np.arcsinh(np.tan(np.radians(s))) / np.pi) / 2 * n)
    grid = xyz_grid(17, x, y)
    out = img.read(grid)
    assert out.mask.any() and not out.mask.all()
    ref = np.full((1, 256, 256), np.nan, np.float32)
    reproject(
        data,
        ref,
        src_transform=UTM_TRANSFORM,
        src_crs="EPSG:32719",
        dst_transform=grid.transform,
        dst_crs=grid.crs,
        dst_nodata=np.nan,
        resampling=resampling,
        tolerance=1e-3,  # our transformer error (reproject's default: 0.125 px)
    )
    assert (out.mask == np.isnan(ref)).all()
    np.testing.assert_allclose(out.data[~out.mask], ref[~np.isnan(ref)], atol=2e-3)


@pytest.mark.parametrize(
    "arr, words",
    [
        (np.zeros((1, 1, 2, 2)), r"\(bands, rows, cols\)"),
        (np.zeros((0, 3, 3)), "non-empty"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_from_array_bad_shapes_and_dtypes(arr, words):
    with pytest.raises(InputError, match=words):
        Image.from_array(arr, transform=UTM_TRANSFORM, crs="EPSG:32719")


def test_from_array_unknown_crs_raises_projection_error():
    with pytest.raises(ProjectionError, match="EPSG:1234567"):
        Image.from_array(np.zeros((2, 2)), transform=UTM_TRANSFORM, crs="EPSG:1234567")


def test_from_array_refuses_a_gdal_order_geotransform_tuple():
    # (x0, xres, 0, y0, 0, yres) read in affine's order put the image over the whole world.
    with pytest.raises(ProjectionError, match="from_gdal"):
        Image.from_array(np.zeros((2, 2)), transform=(500000, 10, 0, 4000000, 0, -10), crs=32719)
    img = Image.from_array(np.zeros((2, 2)), transform=(10, 0, 500000, 0, -10, 4000000), crs=32719)
    assert img.bounds[2] - img.bounds[0] < 0.01


def test_from_array_band_names_must_match_and_be_unique():
    with pytest.raises(InputError, match="2 band"):
        Image.from_array(np.zeros((2, 2, 2)), transform=UTM_TRANSFORM, crs=32719, band_names=["a"])
    with pytest.raises(InputError, match="duplicates"):
        Image.from_array(np.zeros((2, 2, 2)), transform=UTM_TRANSFORM, crs=32719, band_names=["a", "a"])


def test_from_array_says_when_an_array_looks_like_rows_cols_bands():
    rgb = np.zeros((50, 40, 3), np.float32)  # PIL / matplotlib order
    with pytest.warns(
        UserWarning, match=r"\(50, 40, 3\) as \(bands, rows, cols\): 50 bands of 40x3.*moveaxis"
    ):
        img = Image.from_array(rgb, transform=UTM_TRANSFORM, crs=32719)
    assert len(img.band_names) == 50
    with pytest.raises(InputError, match=r"np.moveaxis\(a, -1, 0\)"):
        Image.from_array(rgb, transform=UTM_TRANSFORM, crs=32719, band_names=["r", "g", "b"])
    img = Image.from_array(
        np.moveaxis(rgb, -1, 0), transform=UTM_TRANSFORM, crs=32719, band_names=["r", "g", "b"]
    )
    assert img.grid.width == 40 and img.grid.height == 50


# ---- band algebra and conveniences ------------------------------------------------------------
@pytest.fixture
def three():
    data = np.stack([np.full((4, 5), v, np.float32) for v in (1, 2, 3)])
    return Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719", band_names=["r", "g", "b"])


def test_select_by_name_and_index_reorders_lazily(three):
    sel = three.select(["b", 0])
    assert sel.band_names == ["b", "r"]
    assert sel.grid == three.grid
    out = sel.to_numpy()
    assert out[:, 0, 0].tolist() == [3, 1]
    assert three.select("g").to_numpy()[0, 0, 0] == 2


def test_select_unknown_band_lists_the_available_ones(three):
    with pytest.raises(InputError, match=r"\['nir'\].*\['r', 'g', 'b'\]"):
        three.select(["nir"])
    with pytest.raises(InputError, match="out of range"):
        three.select([5])


def test_rename(three):
    ren = three.rename(["x", "y", "z"])
    assert ren.band_names == ["x", "y", "z"]
    assert ren.select("z").to_numpy()[0, 0, 0] == 3
    with pytest.raises(InputError, match="3 bands"):
        three.rename(["x"])


def test_a_reordering_select_and_a_swapping_rename_do_not_share_cached_cells(three):
    # Both views are named ["b", "g", "r"], but select reads b, g, r and rename reads r, g, b:
    # predictions of one must never be served from the cell cache to the other.
    from ee_model_widgets import Model
    from ee_model_widgets.core.cache import CellCache

    first_band = Model.from_callable(
        lambda batch: batch["array"][..., :1],
        fingerprint="first-band",
        input_tile_size=4,
        output_bands={"v": {"type": "float"}},
    )
    cache = CellCache()
    picked, renamed = three.select(["b", "g", "r"]), three.rename(["b", "g", "r"])
    assert first_band.predict_image(picked, cache=cache).to_numpy()[0, 0, 0] == 3
    assert first_band.predict_image(renamed, cache=cache).to_numpy()[0, 0, 0] == 1
    assert first_band.predict_image(three.select(["b", "g", "r"]), cache=cache).to_numpy()[0, 0, 0] == 3
    assert cache.hits > 0  # an identical view does share its cells


def test_unknown_resampling_name_lists_choices(three):
    with pytest.raises(InputError, match="bilinear"):
        three.read(three.grid, resampling="smooth")
    with pytest.raises(InputError, match="Unknown resampling 'gauss'"):  # overviews only, GDAL cannot warp it
        three.read(three.grid, resampling="gauss")


def test_to_numpy_with_region_and_pixel_limit(three):
    w, s, e, n = three.bounds
    out = three.to_numpy(region=(w, s, (w + e) / 2, n))
    assert out.shape[1] == 4 and 2 <= out.shape[2] <= 4
    with pytest.raises(InputError, match="max_pixels"):
        three.to_numpy(max_pixels=10)
    with pytest.raises(RegionError):
        three.to_numpy(region=(0, 0, 1, 1))


def test_sample_returns_the_pixel_under_a_point(three):
    w, s, e, n = three.bounds
    assert three.sample((w + e) / 2, (s + n) / 2) == {"r": 1.0, "g": 2.0, "b": 3.0}
    with pytest.warns(UserWarning, match=r"Point \(0.0, 0.0\) is outside the image, which covers"):
        assert three.sample(0.0, 0.0) == {"r": None, "g": None, "b": None}
    lon, lat = (w + e) / 2, (s + n) / 2
    with pytest.warns(UserWarning, match=r"inside read as \(lat, lon\)"):
        three.sample(lat, lon)


def test_tile_is_256_square_and_masked_off_the_image(three):
    t = three.tile(10, 10, 10)
    assert t.shape == (3, 256, 256) and t.mask.all()


def test_from_xarray_uses_rioxarray_georeferencing():
    rioxarray = pytest.importorskip("rioxarray")
    import xarray as xr

    da = xr.DataArray(
        np.arange(12, dtype=np.float32).reshape(1, 3, 4),
        dims=("band", "y", "x"),
        coords={"band": [1], "y": 7000000 - 5 - 10 * np.arange(3), "x": 500005 + 10 * np.arange(4)},
    ).rio.write_crs("EPSG:32719")
    assert rioxarray is not None
    img = Image.from_xarray(da)
    assert img.grid == Grid("EPSG:32719", UTM_TRANSFORM, 4, 3)
    np.testing.assert_array_equal(img.to_numpy().data, da.values)


def test_from_xarray_does_not_take_rioxarrays_identity_fallback_for_a_georeferencing():
    # rioxarray answers Affine.identity() when it cannot tell (lat/lon dims, no coordinates,
    # one column): that would put the image at (0, 0) with 1-unit pixels, silently.
    pytest.importorskip("rioxarray")
    import xarray as xr

    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    latlon = xr.DataArray(
        values, dims=("lat", "lon"), coords={"lat": [-9.5, -9.6, -9.7], "lon": [20.05, 20.15, 20.25, 20.35]}
    ).rio.write_crs("EPSG:4326")
    np.testing.assert_allclose(Image.from_xarray(latlon).bounds, (20.0, -9.75, 20.4, -9.45))
    with pytest.raises(InputError, match="no 'x' or 'y' coordinates"):
        Image.from_xarray(xr.DataArray(values, dims=("y", "x")).rio.write_crs("EPSG:32719"))
    utm = xr.DataArray(
        values,
        dims=("y", "x"),
        coords={"y": 7000000 - 5 - 10 * np.arange(3), "x": 500005 + 10 * np.arange(4)},
    ).rio.write_crs("EPSG:32719")
    column = utm.isel(x=slice(0, 1))
    with pytest.raises(InputError, match="write_transform"):
        Image.from_xarray(column)
    # An explicitly written transform is trusted, even for one column.
    written = column.rio.write_transform(UTM_TRANSFORM)
    assert Image.from_xarray(written).grid == Grid("EPSG:32719", UTM_TRANSFORM, 1, 3)


def test_zoomed_out_array_reads_average_and_keep_masks():
    # A pixel-scale checkerboard: averaging gives ~0.5 everywhere, nearest keeps 0/1 values.
    board = (np.indices((512, 512)).sum(axis=0) % 2).astype(np.float32)
    data = np.ma.MaskedArray(board[np.newaxis], mask=np.zeros((1, 512, 512), bool))
    data.mask[0, :256, :] = True  # north half has no data
    img = Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719", band_names=["v"])
    coarse = img.to_numpy(proj=Projection("EPSG:32719", UTM_TRANSFORM).at_scale(160))
    assert coarse.shape == (1, 32, 32)
    assert coarse.mask[0, :15].all() and not coarse.mask[0, 17:].any()
    np.testing.assert_allclose(coarse[0, 17:].compressed(), 0.5, atol=0.05)
    # As in Earth Engine the zoomed-out level is a property of the band (its pyramiding
    # policy), not of the resampling: a mean for values, a picked pixel for class bands.
    proj = Projection("EPSG:32719", UTM_TRANSFORM).at_scale(160)
    near = img.to_numpy(proj=proj, resampling="nearest")
    np.testing.assert_allclose(near[0, 17:].compressed(), 0.5, atol=0.05)
    classes = Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719", categorical=True)
    picked = classes.to_numpy(proj=proj).compressed()
    assert set(np.unique(picked)) <= {0.0, 1.0}  # picked, never averaged to 0.5


@pytest.mark.parametrize("factor", [2, 4, 16])
def test_zoomed_out_nearest_reads_take_earth_engines_pyramid_level(factor):
    # EE computes a coarser output from the pyramid level at (or just finer than) its scale,
    # each level pixel the mean of the full-res pixels under it, then picks the nearest. On
    # a grid `factor` x coarser, aligned with the image, each pixel is then the mean of the
    # factor x factor block under it: the reference is numpy's block mean, not our reader.
    data = RNG.random((1, 64, 64)).astype(np.float32)
    img = Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719")
    coarse = Grid("EPSG:32719", UTM_TRANSFORM @ Affine.scale(factor), 64 // factor, 64 // factor)
    want = data[0].reshape(64 // factor, factor, 64 // factor, factor).mean(axis=(1, 3))
    got = img.read(coarse)
    assert not got.mask.any()
    np.testing.assert_allclose(got.data[0], want, rtol=1e-5)
    # An interpolating read blends a level at least 2x finer: not the block means.
    smooth = img.resample("bilinear").read(coarse)
    assert not np.allclose(smooth.data[0], want, rtol=1e-3)


def test_from_xarray_plain_coords_and_crs_attribute():
    xr = pytest.importorskip("xarray")
    da = xr.DataArray(
        np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        dims=("band", "y", "x"),
        coords={
            "band": ["red", "nir"],
            "y": 7000000 - 5 - 10 * np.arange(3),
            "x": 500005 + 10 * np.arange(4),
        },
        attrs={"crs": "EPSG:32719"},
    )
    img = Image.from_xarray(da)
    assert img.band_names == ["red", "nir"]
    assert img.grid == Grid("EPSG:32719", UTM_TRANSFORM, 4, 3)
    np.testing.assert_array_equal(img.to_numpy().data, da.values)


def test_image_has_its_io_and_band_math_whichever_core_module_is_imported_first():
    """`Image.open`, `export`, band math... are added from the modules above core/image.py when
    `ee_model_widgets.core` loads: importing only core/image.py in a fresh process gives them too."""
    import subprocess
    import sys

    code = (
        "from ee_model_widgets.core.image import Image\n"
        "names = ['open', 'from_array', 'from_xarray', 'export', 'to_xarray', 'add', 'update_mask',\n"
        "         'expression', 'normalizedDifference', '__add__', '__eq__', '__bool__']\n"
        "print(sorted(n for n in names if n not in vars(Image)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_extends_refuses_to_replace_a_method_of_image():
    from ee_model_widgets.core.image import extends

    with pytest.raises(TypeError, match="would replace Image.read"):

        @extends(Image)
        class _Clash:
            def read(self, grid, bands=None, resampling=None):
                return None

    assert Image.read.__qualname__ == "Image.read"
