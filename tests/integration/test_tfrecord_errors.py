"""Bad TFRecord input gets a TFRecordError naming the file and the fix; failed exports
leave nothing half-written (and an earlier export with the same prefix intact)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import tensorflow as tf
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.errors import ExportError, ImageReadError, InputError, RegionError, TFRecordError
from ee_model_widgets.tfrecord import export_image, load_mixer, read_predictions, write_predictions

CRS = "EPSG:32719"
T = Affine(10, 0, 500000, 0, -10, 6200000)


def make_image(width=32, height=16):
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return emw.Image.from_array(rows * 100 + cols, transform=T, crs=CRS, band_names=["v"])


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """8 patches of 8x8, one per shard, gzip; returns (dir, prefix)."""
    d = tmp_path_factory.mktemp("export")
    prefix = str(d / "e")
    export_image(make_image(), prefix, patch_dimensions=8, max_file_size=1)
    return d, prefix


def copy_export(export, tmp_path):
    d, _ = export
    for name in os.listdir(d):
        shutil.copy(d / name, tmp_path / name)
    return str(tmp_path / "e")


def write_raw(path, examples, gzip=False):
    with tf.io.TFRecordWriter(str(path), "GZIP" if gzip else "") as w:
        for ex in examples:
            w.write(ex.SerializeToString())


def float_example(**bands):
    return tf.train.Example(
        features=tf.train.Features(
            feature={
                k: tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(v).tolist()))
                for k, v in bands.items()
            }
        )
    )


def test_missing_shard_is_named(export, tmp_path):
    prefix = copy_export(export, tmp_path)
    os.remove(prefix + "-00003.tfrecord.gz")
    with pytest.raises(
        TFRecordError,
        match=r"Missing shard\(s\) \[3\] \(e-00003\.tfrecord\.gz\) among the 7 shard\(s\).*Add the missing",
    ):
        read_predictions(prefix + "-*.tfrecord.gz", prefix + "-mixer.json")


def test_count_differing_from_total_patches(export, tmp_path):
    _, prefix = export
    preds = tmp_path / "preds.tfrecord"
    write_predictions(preds, {"p": np.zeros((7, 8, 8))})
    with pytest.raises(
        TFRecordError, match=r"hold 7 record\(s\) \(preds\.tfrecord: 7\) but the mixer says totalPatches=8"
    ):
        read_predictions(preds, prefix + "-mixer.json")
    write_predictions(preds, {"p": np.zeros((9, 8, 8))})
    with pytest.raises(
        TFRecordError, match=r"Too many records: record 8 of .*preds\.tfrecord.*totalPatches=8"
    ):
        read_predictions(preds, prefix + "-mixer.json")


def test_mixer_with_missing_keys(export, tmp_path):
    _, prefix = export
    mixer = json.load(open(prefix + "-mixer.json"))
    del mixer["patchesPerRow"]
    del mixer["projection"]["affine"]
    path = tmp_path / "bad-mixer.json"
    path.write_text(json.dumps(mixer))
    with pytest.raises(
        TFRecordError,
        match=r"bad-mixer\.json lacks required key\(s\) \['projection\.affine', 'patchesPerRow'\]",
    ):
        read_predictions(prefix + "-*.tfrecord.gz", path)
    with pytest.raises(TFRecordError, match=r"The mixer dict lacks required key\(s\) \['projection'\]"):
        load_mixer({"patchDimensions": [8, 8], "patchesPerRow": 4, "totalPatches": 8})
    path.write_text('{"projection": ')
    with pytest.raises(TFRecordError, match=r"bad-mixer\.json is not valid JSON"):
        load_mixer(path)
    with pytest.raises(TFRecordError, match="must be a multiple of patchesPerRow"):
        load_mixer({**json.load(open(prefix + "-mixer.json")), "totalPatches": 7})


def test_feature_of_the_wrong_length_names_file_record_and_feature(export, tmp_path):
    _, prefix = export
    good = [float_example(p=np.zeros(64)) for _ in range(8)]
    bad = good[:5] + [float_example(p=np.zeros(60))] + good[6:]
    path = tmp_path / "preds.tfrecord"
    write_raw(path, bad)
    with pytest.raises(
        TFRecordError, match=r"record 5 of .*preds\.tfrecord: feature 'p' has 60 values, expected 64"
    ):
        read_predictions(path, prefix + "-mixer.json")
    # A length that is neither the patch nor the patch plus a kernel margin, from the start.
    write_raw(path, [float_example(p=np.zeros(65))] * 8)
    with pytest.raises(
        TFRecordError, match=r"record 0 of .*'p' has 65 values, but the mixer's patchDimensions are 8x8"
    ):
        read_predictions(path, prefix + "-mixer.json")


def test_int64_values_float32_cannot_hold_are_named(export, tmp_path):
    """Class values beyond 2**24 come back rounded (bands are float32): a warning says which
    feature and what a value reads as, instead of rounding them quietly."""
    _, prefix = export

    def int_example(values):
        return tf.train.Example(
            features=tf.train.Features(
                feature={"label": tf.train.Feature(int64_list=tf.train.Int64List(value=values))}
            )
        )

    path = tmp_path / "labels.tfrecord"
    write_raw(path, [int_example([7] * 64)] * 7 + [int_example([2**24 + 1] + [7] * 63)])
    with pytest.warns(
        UserWarning, match=r"\['label'\] hold values beyond 2\*\*24.*16,777,217 reads as 16,777,216"
    ):
        img = read_predictions(path, prefix + "-mixer.json")
    assert float(np.asarray(img.to_numpy()).max()) == 2**24
    write_raw(path, [int_example([2**24] * 64)] * 8)  # still exact: nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(np.asarray(read_predictions(path, prefix + "-mixer.json").to_numpy()).max()) == 2**24


def test_a_feature_only_later_records_have_is_an_error_unless_bands_are_picked(export, tmp_path):
    _, prefix = export
    path = tmp_path / "preds.tfrecord"
    good = float_example(p=np.zeros(64))
    write_raw(path, [good] * 3 + [float_example(p=np.zeros(64), q=np.ones(64))] + [good] * 4)
    with pytest.raises(
        TFRecordError, match=r"record 3 of .*has feature\(s\) \['q'\] that the first record lacks"
    ):
        read_predictions(path, prefix + "-mixer.json")
    assert read_predictions(path, prefix + "-mixer.json", bands=["p"]).band_names == ["p"]


def test_corrupt_gzip_names_the_file(export, tmp_path):
    prefix = copy_export(export, tmp_path)
    shard = prefix + "-00002.tfrecord.gz"
    data = open(shard, "rb").read()
    with open(shard, "wb") as f:
        f.write(data[: len(data) // 2])  # truncated download
    with pytest.raises(
        TFRecordError, match=r"e-00002\.tfrecord\.gz is corrupt after 0 record\(s\).*download it again"
    ):
        read_predictions(prefix + "-*.tfrecord.gz", prefix + "-mixer.json")
    with open(shard, "wb") as f:
        f.write(b"<html>Access denied</html>")
    with pytest.raises(TFRecordError, match=r"e-00002\.tfrecord\.gz is named \.gz but is not gzip data"):
        read_predictions(prefix + "-*.tfrecord.gz", prefix + "-mixer.json")


def test_corrupt_record_framing_and_non_example_records(export, tmp_path):
    _, prefix = export
    path = tmp_path / "preds.tfrecord"
    write_raw(path, [float_example(p=np.zeros(64)) for _ in range(8)])
    raw = bytearray(path.read_bytes())
    raw[30] ^= 0xFF  # flip bits inside the first record's data: CRC mismatch
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"preds\.tfrecord is corrupt after 0 record\(s\)"):
        read_predictions(path, prefix + "-mixer.json")
    with tf.io.TFRecordWriter(str(path)) as w:
        w.write(b"\xff\xff\xff not a protobuf")
    with pytest.raises(TFRecordError, match=r"record 0 of .*preds\.tfrecord is not a tf\.train\.Example"):
        read_predictions(path, prefix + "-mixer.json")


def test_missing_files_and_globs(export, tmp_path):
    _, prefix = export
    with pytest.raises(TFRecordError, match=r"No TFRecord files match .*nothing-\*"):
        read_predictions(str(tmp_path / "nothing-*"), prefix + "-mixer.json")
    with pytest.raises(TFRecordError, match=r"not found: .*gone\.tfrecord"):
        read_predictions([str(tmp_path / "gone.tfrecord")], prefix + "-mixer.json")
    other = tmp_path / "other-00001.tfrecord.gz"
    shutil.copy(prefix + "-00001.tfrecord.gz", other)
    with pytest.raises(TFRecordError, match=r"come from 2 exports \(\['e', 'other'\]\)"):
        read_predictions([prefix + "-00000.tfrecord.gz", other], prefix + "-mixer.json")
    with pytest.raises(TFRecordError, match=r"Mixer file .*no-mixer\.json not found"):
        read_predictions(prefix + "-*.tfrecord.gz", tmp_path / "no-mixer.json")


class FailingImage(emw.Image):
    """A real image whose reads start failing after `ok` strips, like a GeoTIFF that is
    corrupt halfway through (or a network source that drops)."""

    def __init__(self, inner, ok, exc=None):
        self._inner, self._ok, self._exc = inner, ok, exc
        self._band_names = inner.band_names

    @property
    def grid(self):
        return self._inner.grid

    def _read(self, grid, bands, resampling):
        if self._ok <= 0:
            raise self._exc or ImageReadError("scene.tif: TIFFReadEncodedTile() failed (corrupt file)")
        self._ok -= 1
        return self._inner.read(grid, bands)


def test_failed_export_leaves_nothing_and_keeps_the_previous_export(tmp_path):
    prefix = str(tmp_path / "scene")
    before = export_image(make_image(), prefix, patch_dimensions=8)
    contents = {p: open(p, "rb").read() for p in before}
    with pytest.raises(ImageReadError, match="corrupt file"):
        # Patch row 2 of 2 fails after row 1 was written across several shards.
        export_image(FailingImage(make_image(), ok=1), prefix, patch_dimensions=8, max_file_size=1)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in before)
    assert {p: open(p, "rb").read() for p in before} == contents

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(KeyboardInterrupt):
        export_image(
            FailingImage(make_image(), ok=1, exc=KeyboardInterrupt()), fresh / "x", patch_dimensions=8
        )
    assert os.listdir(fresh) == []


SLOW_EXPORT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from affine import Affine
    import ee_model_widgets as emw
    from ee_model_widgets.tfrecord import export_image

    rows, cols = np.mgrid[0:64, 0:64].astype(np.float32)
    img = emw.Image.from_array(rows * 100 + cols, transform=Affine(10, 0, 500000, 0, -10, 6200000),
                               crs="EPSG:32719", band_names=["v"])
    inner = img.read
    img.read = lambda *a, **k: (time.sleep(0.3), inner(*a, **k))[1]  # a slow source
    export_image(img, sys.argv[1], patch_dimensions=8, max_file_size=1)
    """
)


def test_a_killed_export_leaves_temporaries_that_the_next_export_removes(tmp_path):
    prefix = tmp_path / "scene"
    child = subprocess.Popen([sys.executable, "-c", SLOW_EXPORT, str(prefix)])
    try:
        deadline = time.monotonic() + 120
        while len(os.listdir(tmp_path)) < 2 and time.monotonic() < deadline:  # a few shards begun
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    left = os.listdir(tmp_path)
    assert len(left) >= 2 and all(n.startswith(".scene-") and n.endswith(".tmp") for n in left), left

    written = export_image(make_image(), prefix, patch_dimensions=8, max_file_size=1)
    assert sorted(os.listdir(tmp_path)) == sorted(map(os.path.basename, written))  # no .tmp left
    preds = read_predictions(str(prefix) + "-*.tfrecord.gz", str(prefix) + "-mixer.json")
    assert np.array_equal(preds.to_numpy()[0], make_image().to_numpy()[0])


def test_bad_export_arguments(tmp_path):
    img = make_image()
    with pytest.raises(RegionError, match=r"region is 32x16 px, smaller than one 64x64 patch"):
        export_image(img, tmp_path / "a", patch_dimensions=64)
    with pytest.raises(InputError, match="patch_dimensions must be"):
        export_image(img, tmp_path / "a", patch_dimensions=(8, "x"))
    with pytest.raises(InputError, match="max_file_size must be a positive"):
        export_image(img, tmp_path / "a", patch_dimensions=8, max_file_size=0)
    with pytest.raises(ExportError, match=r"Output directory .*missing.* does not exist"):
        export_image(img, tmp_path / "missing" / "a", patch_dimensions=8)
    with pytest.raises(InputError, match=r"Name the 2 output channel\(s\)"):
        write_predictions(tmp_path / "p.tfrecord", np.zeros((3, 4, 4, 2)))
    assert os.listdir(tmp_path) == []


def test_concurrent_exports_to_one_prefix_leave_one_consistent_export(tmp_path):
    import threading

    prefix = str(tmp_path / "e")
    for _ in range(10):
        threads = [
            threading.Thread(target=export_image, args=(make_image(),), kwargs=kw)
            for kw in (
                {"prefix": prefix, "patch_dimensions": 4, "max_file_size": 1},
                {"prefix": prefix, "patch_dimensions": 8, "max_file_size": 1},
            )
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mixer = load_mixer(prefix + "-mixer.json")
        shards = [f for f in os.listdir(tmp_path) if f.endswith(".tfrecord.gz")]
        assert len(shards) == mixer.total_patches  # one record per shard here


def test_an_export_larger_than_the_disk_is_refused_or_warned_before_any_patch(tmp_path):
    # A slip of scale (1e-5 m for 10 m): exabytes of patches. Uncompressed, their size is known:
    # refused; gzip: a warning. Either way before any read (a read here would run for days).
    img = make_image()
    reads = []

    def no_read(*args, **kwargs):
        reads.append(1)
        raise RuntimeError("the export read a patch before checking its size")

    img.read = no_read
    tiny = emw.Projection(CRS).at_scale(1e-5)
    prefix = str(tmp_path / "huge")
    with pytest.raises(ExportError, match=r"MiB of values.*are free on the disk.*coarser scale"):
        export_image(img, prefix, proj=tiny, compressed=False)
    with pytest.warns(UserWarning, match="likely fail on a full disk"), pytest.raises(RuntimeError):
        export_image(img, prefix, proj=tiny, compressed=True)
    assert len(reads) == 1  # only the gzip export, once warned, went on to read
    assert os.listdir(tmp_path) == []
