"""GeoTIFF export: georeferencing, band names, values and masks survive; failures leave nothing."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import rasterio

from ee_model_widgets import Image, Projection
from ee_model_widgets.core.export import export_geotiff
from ee_model_widgets.core.image import Image as BaseImage
from ee_model_widgets.errors import ExportError, InputError, ModelError
from tests.conftest import UTM_TRANSFORM


@pytest.fixture
def scene():
    rng = np.random.default_rng(1)
    data = rng.random((2, 300, 530)).astype(np.float32)  # several 256-px windows, ragged edges
    mask = np.zeros(data.shape, bool)
    mask[0, 10:20, 500:] = True  # per-band masks
    mask[1, 290:, :7] = True
    img = Image.from_array(
        np.ma.MaskedArray(data, mask=mask),
        transform=UTM_TRANSFORM,
        crs="EPSG:32719",
        band_names=["red", "nir"],
    )
    return img, data, mask


def test_export_round_trips_crs_transform_names_values_and_masks(scene, tmp_path):
    img, data, mask = scene
    out = img.export(tmp_path / "out.tif", block_size=256, progress=False)
    assert out == str(tmp_path / "out.tif")
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 32719
        assert ds.transform == UTM_TRANSFORM
        assert ds.descriptions == ("red", "nir")
        assert ds.dtypes == ("float32", "float32")
        assert ds.block_shapes[0] == (256, 256)
        assert ds.compression.name.lower() == "deflate"
        values = ds.read(masked=True)
    assert (values.mask == mask).all()
    np.testing.assert_array_equal(values.data[~mask], data[~mask])
    back = Image.open(out)
    assert back.band_names == ["red", "nir"]
    np.testing.assert_array_equal(back.to_numpy().mask, mask)
    assert os.listdir(tmp_path) == ["out.tif"]  # no temp files left behind


def test_export_with_region_and_projection(scene, tmp_path):
    img, _, _ = scene
    w, s, e, n = img.bounds
    region = (w, s, (w + e) / 2, n)
    proj = Projection("EPSG:3857").at_scale(20)
    out = img.export(tmp_path / "sub.tif", region=region, proj=proj, progress=False)
    expected = img.to_numpy(region=region, proj=proj)
    with rasterio.open(out) as ds:
        assert ds.crs.to_epsg() == 3857 and ds.transform.a == pytest.approx(20)
        got = ds.read(masked=True)
    assert got.shape == expected.shape
    assert (got.mask == expected.mask).all()
    np.testing.assert_allclose(got.data[~got.mask], expected.data[~expected.mask])


def test_export_shows_a_progress_bar(scene, tmp_path, capsys):
    img, _, _ = scene
    img.export(tmp_path / "bar.tif", block_size=256, progress=True)
    err = capsys.readouterr().err
    assert "export bar.tif" in err and "6/6" in err


class _FailsMidway(BaseImage):
    """An image whose third window read raises, like a model failing halfway through."""

    def __init__(self, inner):
        self._inner = inner
        self._band_names = inner.band_names
        self.reads = 0

    @property
    def grid(self):
        return self._inner.grid

    def _read(self, grid, bands, resampling):
        self.reads += 1
        if self.reads == 3:
            raise ModelError("model 'fcn' raised on tile 3")
        return self._inner.read(grid, bands, resampling)


def test_failed_export_leaves_no_file_and_keeps_the_error(scene, tmp_path):
    img, _, _ = scene
    with pytest.raises(ModelError, match="tile 3"):
        export_geotiff(_FailsMidway(img), tmp_path / "fail.tif", block_size=256, progress=False)
    assert os.listdir(tmp_path) == []


def test_failed_export_does_not_clobber_an_existing_file(scene, tmp_path):
    img, _, _ = scene
    target = tmp_path / "keep.tif"
    target.write_bytes(b"previous result")
    with pytest.raises(ModelError):
        export_geotiff(_FailsMidway(img), target, block_size=256, progress=False)
    assert target.read_bytes() == b"previous result"
    assert os.listdir(tmp_path) == ["keep.tif"]


def test_foreign_errors_become_export_errors(scene, tmp_path):
    img, _, _ = scene

    class Broken(_FailsMidway):
        def _read(self, grid, bands, resampling):
            raise RuntimeError("disk on fire")

    with pytest.raises(ExportError, match="disk on fire") as exc:
        export_geotiff(Broken(img), tmp_path / "x.tif", progress=False)
    assert "x.tif" in str(exc.value)
    assert os.listdir(tmp_path) == []


def test_export_argument_errors(scene, tmp_path):
    img, _, _ = scene
    with pytest.raises(InputError, match="block_size"):
        img.export(tmp_path / "a.tif", block_size=300)
    with pytest.raises(ExportError, match="does not exist"):
        img.export(tmp_path / "missing" / "a.tif", progress=False)


@pytest.mark.parametrize("compress", ["jpeg", "webp", "zipp", 1])
def test_a_compression_gdal_would_ignore_or_fail_on_is_refused(scene, tmp_path, compress):
    # GDAL writes a JPEG float32 COG as all-NaN blocks and only logs an error; a typo was ignored.
    img, _, _ = scene
    with pytest.raises(InputError, match="compress must be one of"):
        img.export(tmp_path / "a.tif", compress=compress, progress=False)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "compress, expected", [("LZW", "lzw"), ("zstd", "zstd"), (None, None), ("none", None)]
)
def test_compressions_gdal_can_hold_float32_are_written(scene, tmp_path, compress, expected):
    img, _, _ = scene
    path = img.export(tmp_path / "a.tif", compress=compress, progress=False)
    with rasterio.open(path) as ds:
        assert (ds.compression.value.lower() if ds.compression else None) == expected
        assert not np.isnan(ds.read()).all()


@pytest.mark.parametrize("name", ["scale", "crs", "maxPixels"])
def test_earth_engine_export_keywords_say_what_to_write_instead(scene, tmp_path, name):
    img, _, _ = scene
    with pytest.raises(InputError, match=f"no '{name}' argument.*use "):
        img.export(tmp_path / "a.tif", progress=False, **{name: 30})


@pytest.mark.parametrize("name", ["prediction.png", "map.JPG", "out.nc", "patches.tfrecord.gz"])
def test_a_name_of_another_format_is_refused_before_any_pixel(scene, tmp_path, name):
    # Before, prediction.png was written as a GeoTIFF named .png, which image viewers refuse.
    img, _, _ = scene
    with pytest.raises(ExportError, match=r"export\(\) writes a GeoTIFF, but .* name it \.tif, e\.g\. '"):
        img.export(tmp_path / name, progress=False)
    assert os.listdir(tmp_path) == []
    assert img.export(tmp_path / "prediction.TIFF", progress=False)  # any case of .tif/.tiff is a GeoTIFF
    with rasterio.open(tmp_path / "prediction.TIFF") as ds:
        assert ds.driver == "GTiff"


def test_overviews_are_built_on_request(tmp_path):
    img = Image.from_array(np.ones((1, 1024, 1024), np.float32), transform=UTM_TRANSFORM, crs="EPSG:32719")
    out = img.export(tmp_path / "ov.tif", overviews=True, progress=False)
    with rasterio.open(out) as ds:
        assert ds.overviews(1) == [2, 4]


def test_a_scale_coarser_than_the_whole_image_warns_before_any_pixel(scene, tmp_path):
    # A slip of units (1e6 for 10 m): the file would be one NaN pixel, silently.
    img, _, _ = scene
    path = tmp_path / "coarse.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning stops the export: it came before the work
        with pytest.raises(UserWarning, match=r"larger than the whole image.*1 x 1 pixel.*at_scale\(10\)"):
            img.export(str(path), proj=Projection("EPSG:32719").at_scale(1e6), progress=False)
    assert os.listdir(tmp_path) == []
    with pytest.warns(UserWarning, match="finer scale"):
        img.export(str(path), proj=Projection("EPSG:32719").at_scale(1e6), progress=False)
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (1, 1)


def test_a_one_pixel_region_at_the_image_scale_does_not_warn_and_holds_that_pixel(scene, tmp_path):
    img, data, _ = scene
    west, north = img.grid.transform @ (0, 0)
    pixel = img.grid.transform.a
    from pyproj import Transformer

    to_lonlat = Transformer.from_crs("EPSG:32719", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(west + pixel / 2, north - pixel / 2)  # the centre of pixel (0, 0)
    path = tmp_path / "one.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        img.export(str(path), region=(lon - 1e-7, lat - 1e-7, lon + 1e-7, lat + 1e-7), progress=False)
    with rasterio.open(path) as src:
        assert (src.width, src.height) == (1, 1)
        np.testing.assert_array_equal(src.read()[:, 0, 0], data[:, 0, 0])


@pytest.mark.parametrize(
    "option, message",
    [
        ({"client": "tcp://127.0.0.1:8786"}, r"pass distributed\.Client\('tcp://127\.0\.0\.1:8786'\)"),
        ({"cancel": True}, r"cancel= takes a threading\.Event"),
        ({"on_progress": 5}, r"on_progress= takes a function f\(done, total\)"),
    ],
)
def test_a_wrong_client_cancel_or_callback_is_refused_before_the_work(scene, tmp_path, option, message):
    img, _, _ = scene
    with pytest.raises(InputError, match=message):
        img.export(str(tmp_path / "o.tif"), progress=False, **option)
    assert os.listdir(tmp_path) == []
