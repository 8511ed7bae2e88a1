"""An export holds GDAL's block cache small while it runs and gives the user's limit back after."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rasterio
from rasterio.env import get_gdal_config, set_gdal_config

from ee_model_widgets import Image
from ee_model_widgets.core.gdal_cache import EXPORT_CACHE_BYTES
from tests.conftest import UTM_TRANSFORM

LARGE = 512 * 1024 * 1024


@pytest.fixture
def scene():
    data = np.random.default_rng(3).random((2, 300, 530)).astype(np.float32)
    return Image.from_array(data, transform=UTM_TRANSFORM, crs="EPSG:32719", band_names=["a", "b"]), data


@pytest.fixture
def user_limit():
    """A known, large limit set the way a user would; the original one restored after the test."""
    before = get_gdal_config("GDAL_CACHEMAX")
    set_gdal_config("GDAL_CACHEMAX", LARGE)
    yield LARGE
    set_gdal_config("GDAL_CACHEMAX", before)


def _export_seeing_limits(img, path, seen: list, **kw):
    """Export, recording GDAL's cache limit as each window is written (not at the first call,
    made before any work)."""

    def record(done, total):
        if done:
            seen.append(get_gdal_config("GDAL_CACHEMAX"))

    return img.export(path, block_size=256, progress=False, on_progress=record, **kw)


def test_an_export_runs_with_a_small_block_cache_and_restores_the_users(scene, tmp_path, user_limit):
    img, data = scene
    seen: list = []
    out = _export_seeing_limits(img, tmp_path / "out.tif", seen)
    assert seen and max(seen) <= EXPORT_CACHE_BYTES  # every window written under the bound
    assert get_gdal_config("GDAL_CACHEMAX") == user_limit
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(), data)


def test_inside_a_users_rasterio_env_the_limit_comes_back(scene, tmp_path, user_limit):
    img, _ = scene
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        seen: list = []
        _export_seeing_limits(img, tmp_path / "out.tif", seen)
        assert max(seen) <= EXPORT_CACHE_BYTES
        assert get_gdal_config("GDAL_CACHEMAX") == user_limit
    assert get_gdal_config("GDAL_CACHEMAX") == user_limit


def test_a_smaller_user_limit_is_kept(scene, tmp_path):
    img, _ = scene
    before = get_gdal_config("GDAL_CACHEMAX")
    small = 8 * 1024 * 1024
    set_gdal_config("GDAL_CACHEMAX", small)
    try:
        seen: list = []
        _export_seeing_limits(img, tmp_path / "out.tif", seen)
        assert set(seen) == {small}
        assert get_gdal_config("GDAL_CACHEMAX") == small
    finally:
        set_gdal_config("GDAL_CACHEMAX", before)


def test_two_overlapping_exports_in_two_threads_restore_the_limit(scene, tmp_path, user_limit):
    img, data = scene
    second_started = threading.Event()
    seen_a: list = []
    seen_b: list = []
    errors: list = []

    def first(done, total):
        if done:
            seen_a.append(get_gdal_config("GDAL_CACHEMAX"))
            second_started.wait(30)  # the second export writes while the first one is under way

    def second(done, total):
        if done:
            seen_b.append(get_gdal_config("GDAL_CACHEMAX"))
            second_started.set()

    def run(name, cb):
        try:
            img.export(tmp_path / name, block_size=256, progress=False, on_progress=cb)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    a = threading.Thread(target=run, args=("a.tif", first))
    b = threading.Thread(target=run, args=("b.tif", second))
    a.start()
    b.start()
    a.join(60)
    b.join(60)
    assert not errors
    assert second_started.is_set()
    assert max(seen_a + seen_b) <= EXPORT_CACHE_BYTES
    assert get_gdal_config("GDAL_CACHEMAX") == user_limit
    for name in ("a.tif", "b.tif"):
        with rasterio.open(tmp_path / name) as ds:
            np.testing.assert_array_equal(ds.read(), data)
