"""Earth Engine's TFRecord options beyond the basic layout, and the mixer checked against the
records.

Export: `tensor_depths` (array bands as CHW 3-D features), `sequence_data` (one SequenceExample
per pixel), uint8 bands as raw bytes, `masked_threshold` (drops patches, no mixer). The written
files are parsed with TensorFlow's own protobufs and compared with the image's pixels.
Import: records hand-built to EE's layout (3-D features, sequences, uint8 bytes) and mixers that
disagree with their records.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf
from affine import Affine

import ee_model_widgets as emw
from ee_model_widgets.errors import InputError, TFRecordError
from ee_model_widgets.tfrecord import export_image, read_predictions

CRS = "EPSG:32719"
T = Affine(10, 0, 500000, 0, -10, 6200000)
RNG = np.random.default_rng(5)


def records(pattern_prefix: str) -> list[bytes]:
    paths = sorted(p for p in os.listdir(os.path.dirname(pattern_prefix)) if ".tfrecord" in p)
    out = []
    for p in paths:
        full = os.path.join(os.path.dirname(pattern_prefix), p)
        out += [r.numpy() for r in tf.data.TFRecordDataset(full, compression_type="GZIP")]
    return out


def float_feature(values) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(values).tolist()))


def floats(feature) -> np.ndarray:
    assert feature.WhichOneof("kind") == "float_list"
    return np.asarray(feature.float_list.value, np.float32)


# ---- tensorDepths: array bands ------------------------------------------------------------------------


@pytest.fixture
def probs_image():
    """Scalar band `b` and an array band `probs` of length 3 (bands probs_0..probs_2), 8 x 8 px."""
    data = RNG.random((4, 8, 8)).astype(np.float32)
    img = emw.Image.from_array(data, T, CRS, band_names=["b", "probs_0", "probs_1", "probs_2"])
    return img, data


def test_tensor_depths_writes_array_bands_as_chw_features(tmp_path, probs_image):
    img, data = probs_image
    prefix = str(tmp_path / "a")
    files = export_image(img, prefix, patch_dimensions=4, tensor_depths={"probs": 3})
    assert files[-1] == prefix + "-mixer.json"
    recs = [tf.train.Example.FromString(r).features.feature for r in records(prefix)]
    assert len(recs) == 4 and sorted(recs[0]) == ["b", "probs"]
    # patch 1 (top right): channel-major, then rows, then columns
    np.testing.assert_array_equal(floats(recs[1]["probs"]), data[1:4, 0:4, 4:8].ravel())
    np.testing.assert_array_equal(floats(recs[1]["b"]), data[0, 0:4, 4:8].ravel())
    # the whole record equals one built by hand to EE's layout
    by_hand = tf.train.Example(
        features=tf.train.Features(
            feature={"b": float_feature(data[0, 4:8, 0:4]), "probs": float_feature(data[1:4, 4:8, 0:4])}
        )
    )
    assert tf.train.Example.FromString(records(prefix)[2]) == by_hand


def test_tensor_depths_pads_with_default_value_and_truncates(tmp_path, probs_image):
    img, data = probs_image
    export_image(img, str(tmp_path / "pad"), patch_dimensions=8, tensor_depths={"probs": 5}, default_value=-1)
    (rec,) = [tf.train.Example.FromString(r).features.feature for r in records(str(tmp_path / "pad"))]
    got = floats(rec["probs"]).reshape(5, 8, 8)
    np.testing.assert_array_equal(got[:3], data[1:4])
    assert np.all(got[3:] == -1)
    os.mkdir(tmp_path / "t")
    export_image(img, str(tmp_path / "t" / "cut"), patch_dimensions=8, tensor_depths={"probs": 2})
    (rec,) = [tf.train.Example.FromString(r).features.feature for r in records(str(tmp_path / "t" / "cut"))]
    np.testing.assert_array_equal(floats(rec["probs"]).reshape(2, 8, 8), data[1:3])


def test_tensor_depths_errors_name_the_band(tmp_path, probs_image):
    img, _ = probs_image
    with pytest.raises(
        InputError, match=r"tensor_depths names 'spec', but the image has no array band 'spec'"
    ):
        export_image(img, str(tmp_path / "x"), patch_dimensions=4, tensor_depths={"spec": 2})
    with pytest.raises(InputError, match=r"'b' is a scalar band"):
        export_image(img, str(tmp_path / "x"), patch_dimensions=4, tensor_depths={"b": 2})
    with pytest.raises(InputError, match=r"tensor_depths\['probs'\] must be a positive integer"):
        export_image(img, str(tmp_path / "x"), patch_dimensions=4, tensor_depths={"probs": 0})
    assert not os.listdir(tmp_path)


def test_collapse_bands_with_an_array_band(tmp_path, probs_image):
    img, data = probs_image
    export_image(
        img, str(tmp_path / "c"), patch_dimensions=8, tensor_depths={"probs": 3}, collapse_bands=True
    )
    (rec,) = [tf.train.Example.FromString(r).features.feature for r in records(str(tmp_path / "c"))]
    assert list(rec) == ["b"]  # named after the first band
    np.testing.assert_array_equal(floats(rec["b"]).reshape(4, 8, 8), data)


# ---- sequenceData ------------------------------------------------------------------------------------


def test_sequence_data_one_sequence_example_per_pixel(tmp_path, probs_image):
    img, data = probs_image
    prefix = str(tmp_path / "s")
    export_image(img, prefix, patch_dimensions=4, tensor_depths={"probs": 3}, sequence_data=True)
    seqs = [tf.train.SequenceExample.FromString(r) for r in records(prefix)]
    assert len(seqs) == 4 * 16  # 4 patches of 4 x 4 pixels
    # pixel 6 of patch 2 (bottom left): patch row 1, col 2 -> image row 5, col 2
    ex = seqs[2 * 16 + 6]
    assert list(ex.context.feature) == ["b"]
    np.testing.assert_array_equal(floats(ex.context.feature["b"]), [data[0, 5, 2]])
    steps = ex.feature_lists.feature_list["probs"].feature
    assert [floats(f)[0] for f in steps] == list(data[1:4, 5, 2])
    by_hand = tf.train.SequenceExample()
    by_hand.context.feature["b"].CopyFrom(float_feature([data[0, 5, 2]]))
    for v in data[1:4, 5, 2]:
        by_hand.feature_lists.feature_list["probs"].feature.add().CopyFrom(float_feature([v]))
    assert ex == by_hand


def test_sequence_data_with_collapse_bands_is_one_time_series(tmp_path, probs_image):
    img, data = probs_image
    prefix = str(tmp_path / "sc")
    export_image(
        img, prefix, patch_dimensions=8, tensor_depths={"probs": 3}, sequence_data=True, collapse_bands=True
    )
    ex = tf.train.SequenceExample.FromString(records(prefix)[9])  # row 1, col 1
    assert not ex.context.feature and list(ex.feature_lists.feature_list) == ["b"]
    assert [floats(f)[0] for f in ex.feature_lists.feature_list["b"].feature] == list(data[:, 1, 1])


# ---- uint8 bands as bytes ----------------------------------------------------------------------------


def test_uint8_bands_are_written_as_raw_bytes(tmp_path, write_geotiff):
    classes = RNG.integers(0, 255, (8, 8)).astype(np.uint8)
    other = RNG.random((8, 8)).astype(np.float32)
    img = emw.Image.open(write_geotiff(classes, name="c.tif")).rename(["class"])
    assert img.band_types == {"class": np.dtype("uint8")}
    both = emw.Image.from_array(np.stack([classes, classes]), T, CRS, band_names=["c", "d"])
    prefix = str(tmp_path / "u")
    with pytest.warns(
        UserWarning, match=r"uint8 band\(s\) \['class'\] .* default_value 300.7 is clamped to 255"
    ):
        export_image(img, prefix, patch_dimensions=4, kernel_size=2, default_value=300.7)
    recs = [tf.train.Example.FromString(r).features.feature for r in records(prefix)]
    f = recs[0]["class"]
    assert f.WhichOneof("kind") == "bytes_list" and len(f.bytes_list.value) == 1
    patch = np.frombuffer(f.bytes_list.value[0], np.uint8).reshape(6, 6)  # 4 + 2 * 1 margin
    np.testing.assert_array_equal(patch[1:, 1:], classes[0:5, 0:5])
    assert np.all(patch[0] == 255) and np.all(patch[:, 0] == 255)  # outside: default clamped to uint8
    stored = np.full((6, 6), 255, np.uint8)
    stored[1:, 1:] = classes[0:5, 0:5]
    by_hand = tf.train.Example(
        features=tf.train.Features(
            feature={"class": tf.train.Feature(bytes_list=tf.train.BytesList(value=[stored.tobytes()]))}
        )
    )
    assert tf.train.Example.FromString(records(prefix)[0]) == by_hand
    # and they come back through read_predictions as the same class values
    back = read_predictions(prefix + "-*.tfrecord.gz", prefix + "-mixer.json")
    np.testing.assert_array_equal(back.to_numpy().data[0], classes)
    # a float band stays a float_list; collapsing uint8 with float promotes to float
    mixed = emw.Image.from_array(np.stack([classes.astype(np.float32), other]), T, CRS, band_names=["c", "o"])
    os.mkdir(tmp_path / "m")
    export_image(mixed, str(tmp_path / "m" / "m"), patch_dimensions=8)
    (rec,) = [tf.train.Example.FromString(r).features.feature for r in records(str(tmp_path / "m" / "m"))]
    assert rec["o"].WhichOneof("kind") == "float_list"
    os.mkdir(tmp_path / "b")
    export_image(both, str(tmp_path / "b" / "b"), patch_dimensions=8, collapse_bands=True)
    (rec,) = [tf.train.Example.FromString(r).features.feature for r in records(str(tmp_path / "b" / "b"))]
    assert (
        np.frombuffer(rec["c"].bytes_list.value[0], np.uint8).tolist()
        == np.stack([classes] * 2).ravel().tolist()
    )


# ---- maskedThreshold ---------------------------------------------------------------------------------


def test_masked_threshold_drops_patches_and_the_mixer(tmp_path):
    data = np.ma.MaskedArray(RNG.random((1, 8, 8)).astype(np.float32), mask=np.zeros((1, 8, 8), bool))
    data.mask[0, :4, :4] = True  # patch 0: all masked
    data.mask[0, :1, 4:8] = True  # patch 1: 4 of 16 masked (25 %)
    img = emw.Image.from_array(data, T, CRS, band_names=["v"])
    prefix = str(tmp_path / "k")
    files = export_image(img, prefix, patch_dimensions=4, masked_threshold=0.2)
    assert not any(f.endswith("-mixer.json") for f in files)  # as in Earth Engine
    recs = [tf.train.Example.FromString(r).features.feature for r in records(prefix)]
    assert len(recs) == 2  # patches 2 and 3 (no masked pixels)
    np.testing.assert_array_equal(floats(recs[0]["v"]), data.data[0, 4:8, 0:4].ravel())
    os.mkdir(tmp_path / "all")
    kept = export_image(img, str(tmp_path / "all" / "k"), patch_dimensions=4, masked_threshold=0.25)
    assert len(records(str(tmp_path / "all" / "k"))) == 3 and not kept[-1].endswith("mixer.json")
    with pytest.raises(InputError, match=r"masked_threshold must be a fraction in \[0, 1\]"):
        export_image(img, str(tmp_path / "x"), patch_dimensions=4, masked_threshold=1.5)


# ---- the mixer against the records ---------------------------------------------------------------------


def mixer(patch: int, per_row: int, total: int) -> dict:
    return {
        "projection": {"crs": CRS, "affine": {"doubleMatrix": [10, 0, 500000, 0, -10, 6200000]}},
        "patchDimensions": [patch, patch],
        "patchesPerRow": per_row,
        "totalPatches": total,
    }


def write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as w:
        for ex in examples:
            w.write(ex.SerializeToString())


def example(values: np.ndarray) -> tf.train.Example:
    feat = tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(values).tolist()))
    return tf.train.Example(features=tf.train.Features(feature={"p": feat}))


def test_mixer_patches_smaller_than_the_records_are_not_taken_for_a_margin(tmp_path):
    # 64 px records, a mixer saying 32: once silently read as a 16 px margin
    write(tmp_path / "p.tfrecord", [example(np.zeros((64, 64))) for _ in range(4)])
    with pytest.raises(
        TFRecordError,
        match=r"'p' has 4096 values \(64x64 px if square\), but the mixer's patchDimensions are 32x32 "
        r"\(1024 values\).*mixer belongs to another export.*kernel_size=\[32, 32\]",
    ):
        read_predictions(tmp_path / "p.tfrecord", mixer(32, 2, 4))


def test_an_explicit_kernel_size_that_disagrees_names_both(tmp_path):
    write(tmp_path / "p.tfrecord", [example(np.zeros((12, 12))) for _ in range(4)])
    with pytest.raises(
        TFRecordError, match=r"has 144 values, expected 196 \(14x14: the mixer's patchDimensions 8x8 \+ 3 px"
    ):
        read_predictions(tmp_path / "p.tfrecord", mixer(8, 2, 4), kernel_size=6)
    got = read_predictions(tmp_path / "p.tfrecord", mixer(8, 2, 4), kernel_size=4)  # 8 + 2 * 2
    assert got.grid.width == 16


def test_an_absurd_mixer_is_refused_before_allocating(tmp_path):
    write(tmp_path / "p.tfrecord", [example(np.zeros((4, 4)))])
    huge = mixer(10_000, 1000, 1000 * 1000)  # 10^7 x 10^7 px
    with pytest.raises(
        TFRecordError, match=r"describes a 10000000x10000000 px grid.*more than read_predictions"
    ):
        read_predictions(tmp_path / "p.tfrecord", huge, kernel_size=0)


def test_cli_passes_the_options(tmp_path, write_geotiff, capsys):
    from ee_model_widgets.cli import main

    data = RNG.random((2, 8, 8)).astype(np.float32)
    path = write_geotiff(data, name="arr.tif", descriptions=["probs_0", "probs_1"])
    os.mkdir(tmp_path / "out")
    prefix = str(tmp_path / "out" / "s")
    args = ["tfrecord", "export", str(path), prefix, "--patch", "4", "--tensor-depths", "probs=2"]
    assert main([*args, "--sequence-data", "--masked-threshold", "0.5"]) == 0
    printed = capsys.readouterr().out.split()
    assert not any(p.endswith("mixer.json") for p in printed)  # masked_threshold < 1: no mixer
    seqs = [tf.train.SequenceExample.FromString(r) for r in records(prefix)]
    assert len(seqs) == 64
    steps = seqs[0].feature_lists.feature_list["probs"].feature
    assert [floats(f)[0] for f in steps] == list(data[:, 0, 0])
