"""train_classifier on scenes with known truth: accuracy, determinism, the model's bands,
the uncertainty layer, evaluate's figures, save/load, and `ee-model prepare`/`serve`."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform as warp_transform

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.core.classifier import CLASS_BAND
from ee_model_widgets.errors import ExportError, InputError, RegionError

UTM = "EPSG:32719"
T = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 7000000.0)
# Class spectra (4 bands) of the synthetic scene: distinct, with overlapping noise.
SPECTRA = np.array([[0.05, 0.04, 0.03, 0.02], [0.04, 0.08, 0.04, 0.35], [0.25, 0.24, 0.26, 0.30]], np.float32)
CLASSES = ["water", "forest", "bare"]


def synthetic_scene(seed: int = 1, shape=(120, 160)):
    """(image, truth image, truth array): blobs of three classes, spectra + Gaussian noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    field = np.sin(xx / 13.0) + np.cos(yy / 9.0) + 0.3 * np.sin((xx + yy) / 5.0)
    truth = np.digitize(field, [-0.5, 0.6]).astype(np.int64)  # 0, 1, 2 in bands of the field
    arr = SPECTRA[truth].transpose(2, 0, 1) + rng.normal(0, 0.03, (4, h, w)).astype(np.float32)
    img = emw.Image.from_array(arr * 10000, transform=T, crs=UTM, band_names=["blue", "green", "red", "nir"])
    truth_img = emw.Image.from_array(
        truth[None].astype(np.float32), transform=T, crs=UTM, band_names=["class"]
    )
    return img, truth_img, truth


def pixel_lonlat(transform, crs, rows, cols):
    xs, ys = transform @ (np.asarray(cols) + 0.5, np.asarray(rows) + 0.5)
    lon, lat = warp_transform(crs, "EPSG:4326", list(xs), list(ys))
    return list(zip(lon, lat))


def label_from_truth(truth: np.ndarray, transform, crs, classes, per_class: int, seed: int = 0) -> emw.Labels:
    """`per_class` random pixels of each class, as points at their centres."""
    rng = np.random.default_rng(seed)
    labels = emw.Labels(classes)
    for k, name in enumerate(classes):
        rows, cols = np.nonzero(truth == k)
        pick = rng.choice(rows.size, size=min(per_class, rows.size), replace=False)
        for lon, lat in pixel_lonlat(transform, crs, rows[pick], cols[pick]):
            labels.add((lon, lat), name)
    return labels


@pytest.fixture(scope="module")
def scene():
    return synthetic_scene()


@pytest.fixture(scope="module")
def trained(scene):
    img, _, truth = scene
    labels = label_from_truth(truth, T, UTM, CLASSES, 50)
    return labels, emw.train_classifier(img, labels, seed=0)


def test_pixel_classifier_is_accurate_on_the_synthetic_scene(scene, trained):
    img, truth_img, truth = scene
    labels, clf = trained
    ev = clf.evaluate(img, truth_img)
    assert ev.n == truth.size
    assert ev.accuracy >= 0.9, ev
    # The figure is the map's: the class band read over the scene against the truth array.
    classes = clf.model.predict_image(img).select([CLASS_BAND]).to_numpy()[0]
    assert np.mean(np.asarray(classes) == truth) == pytest.approx(ev.accuracy)
    assert set(clf.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert clf.history["loss"][-1] < clf.history["loss"][0]


def test_model_bands_are_class_probabilities_then_the_class(scene, trained):
    img, _, _ = scene
    _, clf = trained
    pred = clf.model.predict_image(img)
    assert pred.band_names == CLASSES + [CLASS_BAND]
    arr = pred.to_numpy()
    probs = np.asarray(arr[:3])
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(arr[3]), probs.argmax(axis=0))
    # The same numbers as the Keras network run directly on the pixels (independent path).
    raw = img.to_numpy()
    feeds = {b: np.asarray(raw[i])[None, :, :, None] for i, b in enumerate(img.band_names)}
    direct = clf.keras_model.predict(feeds, verbose=0)
    np.testing.assert_allclose(probs[1], direct[1][0, :, :, 0], atol=1e-5)


def test_training_is_identical_for_a_seed(scene, trained):
    img, _, _ = scene
    labels, clf = trained
    again = emw.train_classifier(img, labels, seed=0)
    for a, b in zip(clf.keras_model.get_weights(), again.keras_model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert again.history == clf.history
    np.testing.assert_array_equal(
        np.asarray(again.model.predict_image(img).to_numpy()),
        np.asarray(clf.model.predict_image(img).to_numpy()),
    )
    other = emw.train_classifier(img, labels, seed=1, epochs=3)
    assert not all(
        np.array_equal(a, b) for a, b in zip(clf.keras_model.get_weights(), other.keras_model.get_weights())
    )


def test_training_leaves_the_users_random_state_alone(scene):
    img, _, truth = scene
    labels = label_from_truth(truth, T, UTM, CLASSES, 5)
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    emw.train_classifier(img, labels, epochs=1)
    assert np.random.rand() == expected


def test_progress_reports_each_epoch_and_can_stop(scene):
    img, _, truth = scene
    labels = label_from_truth(truth, T, UTM, CLASSES, 10)
    seen = []
    clf = emw.train_classifier(
        img, labels, epochs=6, on_progress=lambda info: seen.append(info) or info["epoch"] < 2
    )
    assert [i["epoch"] for i in seen] == [1, 2]
    assert all(i["epochs"] == 6 and "loss" in i and "val_accuracy" in i for i in seen)
    assert len(clf.history["loss"]) == 2


def test_patch_classifier_tiles_without_seams(scene):
    img, truth_img, truth = scene
    labels = label_from_truth(truth, T, UTM, CLASSES, 50)
    clf = emw.train_classifier(img, labels, kind="patch", seed=0)
    assert clf.model.params.overlap == (2, 2)
    assert clf.evaluate(img, truth_img).accuracy >= 0.9
    # Tiled prediction with 2 px overlap == the network on the whole scene, padded with the
    # zeros Earth Engine sends for pixels outside the image.
    got = np.asarray(clf.model.predict_image(img).to_numpy()[:3])
    raw = np.pad(np.asarray(img.to_numpy()), ((0, 0), (2, 2), (2, 2)))
    feeds = {b: raw[i][None, :, :, None] for i, b in enumerate(img.band_names)}
    direct = np.concatenate(clf.keras_model.predict(feeds, verbose=0)[:3], axis=-1)[0, 2:-2, 2:-2].transpose(
        2, 0, 1
    )
    np.testing.assert_allclose(got, direct, atol=1e-5)
    small = (
        clf.model.replace(input_tile_size=(32, 32), output_tile_size=(32, 32))
        .predict_image(img, cache=None)
        .to_numpy()[:3]
    )
    np.testing.assert_allclose(np.asarray(small), got, atol=1e-5)


def test_accuracy_on_the_demo_scene_labelled_from_the_landcover_model():
    img = demo.scene()
    lc = np.asarray(demo.model("landcover").predict_image(img).to_numpy()).argmax(axis=0)
    g = img.grid
    truth_img = emw.Image.from_array(
        lc[None].astype(np.float32), transform=g.transform, crs=g.crs, band_names=["c"]
    )
    labels = label_from_truth(lc, g.transform, g.crs, demo.LANDCOVER_CLASSES, 50)
    assert labels.counts() == dict.fromkeys(demo.LANDCOVER_CLASSES, 50)
    a = emw.train_classifier(img, labels, seed=0)
    ev = a.evaluate(img, truth_img)
    assert ev.accuracy >= 0.9, ev
    b = emw.train_classifier(img, labels, seed=0)
    assert b.evaluate(img, truth_img).confusion.tolist() == ev.confusion.tolist()


def test_evaluate_on_labels_matches_the_map_under_them(scene, trained):
    img, _, truth = scene
    _, clf = trained
    check = label_from_truth(truth, T, UTM, CLASSES, 30, seed=7)
    ev = clf.evaluate(img, check)
    s = check.sample(img)
    shown = np.asarray(clf.model.predict_image(img).select([CLASS_BAND]).to_numpy()[0])[s.rows, s.cols]
    expected = np.zeros((3, 3), int)
    for t, p in zip(s.y, shown):
        expected[t, int(p)] += 1
    assert ev.confusion.tolist() == expected.tolist()
    assert ev.n == 90


def test_uncertainty_layer(scene, trained):
    img, _, _ = scene
    _, clf = trained
    u = np.asarray(clf.uncertainty(img).to_numpy()[0])
    probs = np.asarray(clf.model.predict_image(img).to_numpy()[:3], np.float64)
    ent = -(probs * np.log(np.clip(probs, 1e-300, 1))).sum(axis=0) / np.log(3)
    np.testing.assert_allclose(u, ent, atol=1e-5)
    assert 0 <= u.min() and u.max() <= 1
    m = np.asarray(clf.uncertainty(img, "margin").to_numpy()[0])
    top = np.sort(probs, axis=0)
    np.testing.assert_allclose(m, 1 - (top[-1] - top[-2]), atol=1e-5)
    with pytest.raises(InputError, match="Unknown uncertainty method"):
        clf.uncertainty(img, "variance")


def test_save_load_and_prepare_serve(scene, trained, tmp_path):
    img, _, _ = scene
    _, clf = trained
    path = clf.save(tmp_path / "clf.keras")
    back = emw.TrainedClassifier.load(path)
    assert back.classes == CLASSES and back.kind == "pixel"
    np.testing.assert_array_equal(
        np.asarray(back.model.predict_image(img).to_numpy()),
        np.asarray(clf.model.predict_image(img).to_numpy()),
    )
    with pytest.raises(InputError, match=r"\.keras"):
        clf.save(tmp_path / "clf.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf.keras"]


def test_save_and_load_keep_the_class_names_and_colours(scene, trained, tmp_path):
    # Names a band cannot hold as they are ("eau douce" becomes the band eau_douce), own colours.
    _, clf = trained
    classes, colors = ["eau douce", "forêt", "3"], ["#0000ff", "#00aa00", "#aa8844"]
    named = emw.TrainedClassifier(clf.keras_model, classes=classes, colors=colors, kind=clf.kind)
    back = emw.TrainedClassifier.load(named.save(tmp_path / "named.keras"))
    assert back.classes == classes and back.colors == colors
    assert back.vis_params == named.vis_params  # the same legend on the map
    with pytest.raises(ExportError, match="the folder .*missing.* does not exist"):
        named.save(tmp_path / "missing" / "c.keras")
    # Names given at load time still win.
    assert emw.TrainedClassifier.load(tmp_path / "named.keras", classes=["a", "b", "c"]).classes == [
        "a",
        "b",
        "c",
    ]


def test_exported_model_prepares_and_serves_like_the_local_one(scene, trained, tmp_path):
    """`export_classifier` hands off the .keras, a prepared model and the samples; the
    `ee-model prepare` command on the .keras gives a model that, served over HTTP, predicts
    what the local model predicts."""
    import json
    import subprocess
    import sys

    from ee_model_widgets.serving import serve
    from ee_model_widgets.serving.handoff import export_classifier
    from ee_model_widgets.tfrecord import dataset

    img, _, _ = scene
    labels, clf = trained
    files = export_classifier(clf, img, labels, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "classifier.keras",
        "prepared",
        "samples.tfrecord.gz",
    ]
    # The samples: one record per labelled pixel, the bands' values and the class index.
    x, y = next(iter(dataset(files["samples"], clf.bands, 1, label="class", batch_size=1000)))
    s = labels.sample(img)
    np.testing.assert_array_equal(np.asarray(x).reshape(-1, 4), s.x)
    np.testing.assert_array_equal(np.asarray(y).ravel(), s.y)
    # A second export to the same place is refused; nothing half-written is left behind.
    with pytest.raises(InputError, match="not an empty directory"):
        export_classifier(clf, img, labels, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    outputs = {n: n for n in clf.band_names + [CLASS_BAND]}
    cli = subprocess.run(
        [sys.executable, "-m", "ee_model_widgets.cli", "prepare", "--source_dir", files["keras"],
         "--dest_dir", str(tmp_path / "cli"), "--input", json.dumps({b: b for b in clf.bands}),
         "--output", json.dumps(outputs)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    local = clf.model.predict_image(img, cache=None).to_numpy()
    for path in (tmp_path / "cli", files["prepared"]):
        with serve(path, name="classifier") as h:
            remote = emw.Model.from_vertex_ai(h.url, **clf.ee_params)
            got = remote.predict_image(img, cache=None).to_numpy()
        assert got.shape == local.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(local), atol=1e-5)


def test_bad_training_input(scene):
    img, _, truth = scene
    labels = emw.Labels(["a", "b"])
    labels.add(pixel_lonlat(T, UTM, [3], [3])[0], "a")
    with pytest.raises(InputError, match="at least two classes"):
        emw.train_classifier(img, labels)
    with pytest.raises(InputError, match="kind must be one of"):
        emw.train_classifier(img, labels, kind="forest")
    with pytest.raises(InputError, match="Unknown band|no band"):
        emw.train_classifier(img, labels, bands=["swir"])
    with pytest.raises(InputError, match="collide"):
        emw.train_classifier(img, emw.Labels(["a b", "a_b"]))


def test_a_class_named_like_an_input_band_gets_a_distinct_band(scene):
    img, _, truth = scene
    labels = label_from_truth(truth, T, UTM, ["water", "green", "classification"], 5)
    clf = emw.train_classifier(img, labels, epochs=1)
    assert clf.model.predict_image(img).band_names == [
        "water",
        "green_probability",
        "classification_probability",
        CLASS_BAND,
    ]


def test_classes_named_in_any_script_get_distinct_bands_and_keep_their_names(scene):
    """Model output names must be ASCII: names without an ASCII letter or digit get
    class_<index> bands (they used to collide as "_"), the legend keeps the names."""
    img, _, truth = scene
    labels = label_from_truth(truth, T, UTM, ["水", "лес", "Wald-2"], 5)
    clf = emw.train_classifier(img, labels, epochs=1)
    assert clf.model.predict_image(img).band_names == ["class_0", "class_1", "Wald_2", CLASS_BAND]
    assert clf.classes == ["水", "лес", "Wald-2"]


@pytest.fixture(scope="module")
def nir_masked_left(scene):
    """The scene with its nir band masked left of column 40."""
    img, _, _ = scene
    data = np.asarray(img.to_numpy())
    mask = np.zeros(data.shape, bool)
    mask[3, :, :40] = True
    return emw.Image.from_array(
        np.ma.MaskedArray(data, mask=mask), transform=T, crs=UTM, band_names=img.band_names
    )


def test_training_says_why_a_class_has_no_pixels(scene, nir_masked_left):
    """A class whose labels are all outside the image or all on masked pixels is named, with
    the reason, instead of the bare "label another class"."""
    img, _, _ = scene
    data, masked = np.asarray(img.to_numpy()), nir_masked_left
    labels = emw.Labels(["a", "b"])
    labels.add(pixel_lonlat(T, UTM, [5], [5])[0], "a")  # masked in nir
    labels.add(pixel_lonlat(T, UTM, [5], [80])[0], "b")
    with pytest.raises(InputError, match=r"labels of \['a'\] are all on masked pixels"):
        emw.train_classifier(masked, labels)
    lon, lat = pixel_lonlat(T, UTM, [5], [5])[0]
    labels.clear("a")
    labels.add((lat, lon), "a")  # (lat, lon) by mistake
    with pytest.raises(InputError, match=r"labels of \['a'\] lie outside the image.*lon first"):
        emw.train_classifier(img, labels)
    with pytest.raises(InputError, match="image must be an emw.Image"):
        emw.train_classifier(data, labels)


def test_labels_that_count_for_nothing_are_named_not_dropped_silently(nir_masked_left):
    """Two labels off the image and one on a masked pixel: training goes on with the others,
    and says what it did not use (a warning, and `clf.unused` that the Train tab shows)."""
    masked = nir_masked_left
    labels = emw.Labels(["a", "b"])
    for row, col in [(50, 50), (52, 50), (54, 50)]:
        labels.add(pixel_lonlat(T, UTM, [row], [col])[0], "a")
    for row, col in [(60, 80), (62, 80), (5, 5)]:  # the last one is masked in nir
        labels.add(pixel_lonlat(T, UTM, [row], [col])[0], "b")
    for row, col in [(50, -500), (-900, 20)]:  # off the image
        labels.add(pixel_lonlat(T, UTM, [row], [col])[0], "a")
    expected = "Not used: 2 labels outside the image and 1 labelled pixel masked in the image (nodata or NaN); 5 labelled pixels were sampled."
    with pytest.warns(UserWarning) as caught:
        samples = labels.sample(masked)
    assert [str(w.message) for w in caught] == [expected]
    assert (samples.labels_outside, samples.masked_pixels, len(samples)) == (2, 1, 5)
    with pytest.warns(UserWarning, match="2 labels outside the image"):
        clf = emw.train_classifier(masked, labels, epochs=1)
    assert clf.unused == expected
    assert clf.samples == {"a": 3, "b": 2}
    inside = emw.Labels(["a", "b"])
    inside.add(pixel_lonlat(T, UTM, [50], [50])[0], "a")
    inside.add(pixel_lonlat(T, UTM, [60], [80])[0], "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left out: nothing to say
        assert inside.sample(masked).unused() == ""


def test_evaluate_on_a_reference_that_does_not_overlap_is_an_error(scene, trained):
    from affine import Affine as _Affine

    img, _, truth = scene
    _, clf = trained
    far = emw.Image.from_array(
        truth[None].astype(np.float32),
        transform=T @ _Affine.translation(100000, 0),
        crs=UTM,
        band_names=["c"],
    )
    with pytest.raises(RegionError, match="no valid class pixel"):
        clf.evaluate(img, far)


def test_load_errors_name_the_problem(scene, trained, tmp_path):
    import keras

    from ee_model_widgets.errors import ModelError

    _, clf = trained
    path = clf.save(tmp_path / "clf.keras")
    with pytest.raises(InputError, match="classifies 3 classes"):
        emw.TrainedClassifier.load(path, classes=["a", "b"])
    with pytest.raises(ModelError, match="No such classifier file"):
        emw.TrainedClassifier.load(tmp_path / "missing.keras")
    cut = tmp_path / "cut.keras"
    cut.write_bytes((tmp_path / "clf.keras").read_bytes()[:1000])
    with pytest.raises(ModelError, match="truncated or corrupt"):
        emw.TrainedClassifier.load(cut)
    i = keras.Input((None, None, 1), name="a")
    keras.Model(i, keras.layers.Conv2D(2, 1, name=CLASS_BAND)(i)).save(tmp_path / "other.keras")
    with pytest.raises(ModelError, match="not a classifier saved by"):
        emw.TrainedClassifier.load(tmp_path / "other.keras")
