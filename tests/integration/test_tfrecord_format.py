"""export_image writes Earth Engine's layout: checked with plain TensorFlow, the way Earth
Engine's tutorials parse exports, against the image's own pixels."""

from __future__ import annotations

import glob
import gzip
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.tfrecord import export_image, read_predictions

CRS = "EPSG:32719"
T = Affine(10, 0, 500000, 0, -10, 6200000)


def make_image(width=32, height=24, bands=("a", "b"), transform=T):
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    arr = np.stack([rows * 1000 + cols + 0.25 * i for i in range(len(bands))])
    return emw.Image.from_array(arr, transform=transform, crs=CRS, band_names=list(bands)), arr


def parse_all(files, spec, compressed=True):
    ds = tf.data.TFRecordDataset(files, compression_type="GZIP" if compressed else "")
    return [tf.io.parse_single_example(r, spec) for r in ds]


def shards(prefix):
    return sorted(p for p in glob.glob(f"{prefix}-*.tfrecord*"))


@pytest.mark.parametrize("compressed", [True, False])
def test_patches_parse_with_plain_tf_and_match_the_image(tmp_path, compressed):
    img, arr = make_image()
    prefix = str(tmp_path / "scene")
    # Non-square patches and kernel catch any width/height swap: margins 2 (x) and 1 (y).
    files = export_image(
        img, prefix, patch_dimensions=(8, 6), kernel_size=(4, 2), compressed=compressed, default_value=-7
    )
    ext = ".tfrecord.gz" if compressed else ".tfrecord"
    assert files == [prefix + "-00000" + ext, prefix + "-mixer.json"]

    with open(files[-1]) as f:
        mixer = json.load(f)
    assert mixer == {
        "projection": {
            "crs": "EPSG:32719",
            "affine": {"doubleMatrix": [10.0, 0.0, 500000.0, 0.0, -10.0, 6200000.0]},
        },
        "patchDimensions": [8, 6],
        "patchesPerRow": 4,
        "totalPatches": 16,
    }
    assert list(mixer) == ["projection", "patchDimensions", "patchesPerRow", "totalPatches"]

    # Earth Engine tutorials: FixedLenFeature([H + kernel, W + kernel], tf.float32) per band.
    spec = {b: tf.io.FixedLenFeature([6 + 2, 8 + 4], tf.float32) for b in ("a", "b")}
    parsed = parse_all(files[:-1], spec, compressed)
    assert len(parsed) == 16
    padded = np.pad(arr, ((0, 0), (1, 1), (2, 2)), constant_values=-7)
    for n, ex in enumerate(parsed):  # row-major patch order
        r, c = divmod(n, 4)
        for i, b in enumerate(("a", "b")):
            np.testing.assert_array_equal(ex[b].numpy(), padded[i, r * 6 : r * 6 + 8, c * 8 : c * 8 + 12])


def test_patches_without_kernel_are_exactly_the_patch_and_reassemble(tmp_path):
    img, arr = make_image()
    files = export_image(img, tmp_path / "p", patch_dimensions=8)
    parsed = parse_all(files[:-1], {"a": tf.io.FixedLenFeature([8, 8], tf.float32)})
    mosaic = np.block([[parsed[r * 4 + c]["a"].numpy() for c in range(4)] for r in range(3)])
    np.testing.assert_array_equal(mosaic, arr[0])
    # Reading the export back as if the records were predictions gives the same image.
    back = read_predictions(files[:-1], files[-1])
    assert back.band_names == ["a", "b"]
    assert back.grid == img.grid
    np.testing.assert_array_equal(back.to_numpy().data, arr)


def test_shards_split_by_uncompressed_size_and_continue_the_patch_order(tmp_path):
    img, arr = make_image()
    prefix = str(tmp_path / "s")
    one_record = len(
        tf.train.Example(
            features=tf.train.Features(
                feature={b: tf.train.Feature(float_list=tf.train.FloatList(value=[0.0] * 64)) for b in "ab"}
            )
        ).SerializeToString()
    )
    limit = 3 * (one_record + 16)  # exactly three framed records per shard
    files = export_image(img, prefix, patch_dimensions=8, max_file_size=limit)
    names = [os.path.basename(p) for p in files]
    assert names == [f"s-{i:05d}.tfrecord.gz" for i in range(4)] + ["s-mixer.json"]
    for p in files[:-1]:
        with gzip.open(p, "rb") as f:
            assert len(f.read()) <= limit
    counts = [sum(1 for _ in tf.data.TFRecordDataset(p, "GZIP")) for p in files[:-1]]
    assert counts == [3, 3, 3, 3]
    back = read_predictions(prefix + "-*.tfrecord.gz", files[-1])
    np.testing.assert_array_equal(back.to_numpy().data, arr)
    # `prefix-*` (as people glob Earth Engine exports) skips the mixer sidecar.
    back = read_predictions(prefix + "-*", files[-1])
    np.testing.assert_array_equal(back.to_numpy().data, arr)


def test_masked_pixels_and_outside_margins_get_default_value(tmp_path):
    rows, cols = np.mgrid[0:16, 0:16].astype(np.float32)
    data = np.ma.MaskedArray(rows + cols, mask=rows < 3)
    img = emw.Image.from_array(data, transform=T, crs=CRS, band_names=["v"])
    files = export_image(img, tmp_path / "m", patch_dimensions=8, kernel_size=2, default_value=-1)
    parsed = parse_all(files[:-1], {"v": tf.io.FixedLenFeature([10, 10], tf.float32)})
    first = parsed[0]["v"].numpy()
    assert (first[0] == -1).all() and (first[:, 0] == -1).all()  # outside the image
    assert (first[1:4, 1:] == -1).all()  # masked rows 0..2
    np.testing.assert_array_equal(first[4:, 1:], (rows + cols)[3:9, 0:9])


def test_partial_border_patches_are_dropped_with_a_warning(tmp_path):
    img, arr = make_image(width=20, height=13)
    with pytest.warns(UserWarning, match=r"last 4 column\(s\) and 5 row\(s\)"):
        files = export_image(img, tmp_path / "d", patch_dimensions=8)
    mixer = json.loads(open(files[-1]).read())
    assert (mixer["patchesPerRow"], mixer["totalPatches"]) == (2, 2)
    back = read_predictions(files[:-1], files[-1])
    assert back.grid.shape == (8, 16)
    np.testing.assert_array_equal(back.to_numpy().data, arr[:, :8, :16])


def test_region_and_proj_define_the_patch_grid_like_to_numpy(tmp_path):
    img, _ = make_image(width=64, height=64)
    west, south, east, north = img.bounds
    region = (west + (east - west) * 0.2, south + (north - south) * 0.2, east, north)
    proj = emw.Projection(CRS).at_scale(20)
    with pytest.warns(UserWarning, match="not exported"):  # 27x27 px region, 4x4 patches
        files = export_image(img, tmp_path / "r", region=region, proj=proj, patch_dimensions=4)
    mixer = json.loads(open(files[-1]).read())
    assert mixer["projection"]["affine"]["doubleMatrix"][0] == 20.0
    assert mixer["projection"]["affine"]["doubleMatrix"][4] == -20.0
    back = read_predictions(files[:-1], files[-1])
    expected = img.to_numpy(region, proj)
    h, w = back.grid.shape
    np.testing.assert_allclose(back.to_numpy().data, expected.data[:, :h, :w], atol=1e-4)
    assert back.grid.transform == Affine(*mixer["projection"]["affine"]["doubleMatrix"])


def test_south_up_grid_keeps_rows_along_the_affine_and_reads_back_north_up(tmp_path):
    img, arr = make_image(width=16, height=16)
    south_up = emw.Projection(CRS, Affine(10, 0, 500000, 0, 10, 6200000 - 160))
    files = export_image(img, tmp_path / "su", proj=south_up, patch_dimensions=8)
    mixer = json.loads(open(files[-1]).read())
    assert mixer["projection"]["affine"]["doubleMatrix"][4] == 10.0
    first = parse_all(files[:-1], {"a": tf.io.FixedLenFeature([8, 8], tf.float32)})[0]["a"].numpy()
    # Row 0 of the first patch is the southernmost row of the image.
    np.testing.assert_array_equal(first, arr[0, ::-1][:8, :8])
    back = read_predictions(files[:-1], files[-1])
    assert back.grid.transform.e < 0
    np.testing.assert_array_equal(back.to_numpy().data, arr)


def test_collapse_bands_writes_one_chw_tensor_named_after_the_first_band(tmp_path):
    img, arr = make_image(width=8, height=8)
    files = export_image(img, tmp_path / "c", patch_dimensions=4, collapse_bands=True)
    parsed = parse_all(files[:-1], {"a": tf.io.FixedLenFeature([2, 4, 4], tf.float32)})
    assert len(parsed) == 4 and list(parsed[0]) == ["a"]
    np.testing.assert_array_equal(parsed[3]["a"].numpy(), arr[:, 4:8, 4:8])


def test_reexport_replaces_all_shards_of_the_same_prefix(tmp_path):
    img, arr = make_image()
    prefix = str(tmp_path / "x")
    export_image(img, prefix, patch_dimensions=8, max_file_size=1)  # one patch per shard
    assert len(shards(prefix)) == 12
    files = export_image(img, prefix, patch_dimensions=8, compressed=False)
    assert shards(prefix) == files[:-1] == [prefix + "-00000.tfrecord"]
    back = read_predictions(prefix + "-*.tfrecord*", prefix + "-mixer.json")
    np.testing.assert_array_equal(back.to_numpy().data, arr)
    assert sorted(os.listdir(tmp_path)) == ["x-00000.tfrecord", "x-mixer.json"]


class RecordingImage(emw.Image):
    """Forwards reads to `inner` and records the grids asked for."""

    def __init__(self, inner):
        self._inner = inner
        self._band_names = inner.band_names
        self.grids = []

    @property
    def grid(self):
        return self._inner.grid

    def _read(self, grid, bands, resampling):
        self.grids.append(grid)
        return self._inner.read(grid, bands)


def test_export_reads_strips_of_patch_rows_not_the_whole_region(tmp_path, monkeypatch):
    img, arr = make_image(width=64, height=48)
    rec = RecordingImage(img)
    files = export_image(rec, tmp_path / "a", patch_dimensions=8, kernel_size=4)
    assert len(rec.grids) == 6  # one read per row of patches
    assert {(g.width, g.height) for g in rec.grids} == {(64 + 4, 8 + 4)}

    # With a small strip budget a row is read in chunks of whole patches; same records.
    from ee_model_widgets.tfrecord import patches

    monkeypatch.setattr(patches, "STRIP_BYTES", 3 * 4 * 2 * 12 * 8)  # 3 patches of 2 bands
    rec = RecordingImage(img)
    files2 = export_image(rec, tmp_path / "b", patch_dimensions=8, kernel_size=4)
    assert len(rec.grids) == 6 * 3  # 8 patches per row -> chunks of 3, 3, 2
    assert max(g.width for g in rec.grids) == 3 * 8 + 4
    spec = {"a": tf.io.FixedLenFeature([12, 12], tf.float32)}
    one = [p["a"].numpy() for p in parse_all(files[:-1], spec)]
    two = [p["a"].numpy() for p in parse_all(files2[:-1], spec)]
    assert len(one) == len(two) == 48
    np.testing.assert_array_equal(np.stack(one), np.stack(two))
