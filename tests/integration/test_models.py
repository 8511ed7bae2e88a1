"""Model constructors, input/output mapping, batching and errors, with real Keras/TF models."""

from __future__ import annotations

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from ee_model_widgets.core.image import Image
from ee_model_widgets.core.model import Model
from ee_model_widgets.errors import InputError, ModelError
from tests.conftest import UTM19S, UTM_TRANSFORM
from tests.helpers import run_in_threads


def image(bands=("red", "nir"), rows=16, cols=16, seed=0) -> tuple[np.ndarray, Image]:
    rng = np.random.default_rng(seed)
    arr = (rng.random((len(bands), rows, cols)) * 0.8 + 0.1).astype(np.float32)
    return arr, Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=list(bands))


def conv_model(channels=2, out=3, size=None, seed=0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, channels))
    return keras.Model(inp, keras.layers.Conv2D(out, 1)(inp))


# ---- constructors ----------------------------------------------------------------------------
def test_from_keras_file_round_trip_and_fingerprint(tmp_path):
    arr, img = image()
    km = conv_model()
    path = tmp_path / "m.keras"
    km.save(path)
    a = Model.from_keras(km, input_tile_size=8)
    b = Model.from_keras(str(path), input_tile_size=8)
    assert a.fingerprint == b.fingerprint  # same architecture and weights: cells can be shared
    assert Model.from_keras(conv_model(seed=1), input_tile_size=8).fingerprint != a.fingerprint
    pa = a.predict_image(img, cache=None)
    assert pa.band_names == ["output_0", "output_1", "output_2"]
    np.testing.assert_allclose(
        pa.to_numpy().data, b.predict_image(img, cache=None).to_numpy().data, atol=1e-6
    )
    expect = np.asarray(km(arr.transpose(1, 2, 0)[None]))[0].transpose(2, 0, 1)
    np.testing.assert_allclose(pa.to_numpy().data, expect, atol=1e-6)


def test_switching_between_many_keras_models_does_not_warn_about_retracing():
    # a panel session loads model after model; TensorFlow must not call that "excessive retracing"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    tf_log = logging.getLogger("tensorflow")
    tf_log.addHandler(handler)
    try:
        _, img = image()
        for seed in range(8):
            Model.from_keras(conv_model(seed=seed), input_tile_size=8).predict_image(
                img, cache=None
            ).to_numpy()
    finally:
        tf_log.removeHandler(handler)
    assert not [r.getMessage() for r in records if "retracing" in r.getMessage()]


def test_from_keras_bad_sources(tmp_path):
    with pytest.raises(ModelError, match=r"No such model file: .*nope.keras"):
        Model.from_keras(tmp_path / "nope.keras")
    with pytest.raises(ModelError, match=r"is a directory: load a SavedModel with Model.from_saved_model"):
        Model.from_keras(tmp_path)
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelError, match=r"Cannot load .*broken.keras as a Keras model"):
        Model.from_keras(bad)
    with pytest.raises(InputError, match=r"from_keras takes a keras.Model or a path .* got int"):
        Model.from_keras(3)


def test_unknown_parameter_on_a_constructor_suggests_the_fix():
    with pytest.raises(
        InputError, match=r"Unknown model parameter 'inputTileSise'\. Did you mean 'inputTileSize'\?"
    ):
        Model.from_keras(conv_model(), inputTileSise=[8, 8])


def tf_module_saved(path) -> str:
    class Doubler(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 2], tf.float32, name="array")])
        def serve(self, array):
            return {"doubled": array * 2.0}

    mod = Doubler()
    tf.saved_model.save(mod, str(path), signatures={"serving_default": mod.serve, "other": mod.serve})
    return str(path)


def test_from_saved_model_of_a_tf_module(tmp_path):
    arr, img = image()
    path = tf_module_saved(tmp_path / "sm")
    model = Model.from_saved_model(path, input_tile_size=8)
    assert [s.name for s in model.inputs] == ["array"]
    pred = model.predict_image(img, cache=None)
    assert pred.band_names == ["output_0", "output_1"]
    np.testing.assert_allclose(pred.to_numpy().data, arr * 2, atol=1e-6)


def test_from_saved_model_missing_signature_lists_the_available_ones(tmp_path):
    path = tf_module_saved(tmp_path / "sm")
    with pytest.raises(
        ModelError, match=r"has no signature 'predict'; it has \['other', 'serving_default'\]"
    ):
        Model.from_saved_model(path, signature="predict", input_tile_size=8)
    with pytest.raises(ModelError, match=r"is not a SavedModel directory"):
        Model.from_saved_model(tmp_path / "missing")


def test_from_saved_model_of_a_keras_export(tmp_path):
    arr, img = image()
    km = conv_model(out=1)
    km.export(str(tmp_path / "exported"), verbose=False)
    model = Model.from_saved_model(
        tmp_path / "exported", input_tile_size=8, output_bands={"y": {"type": "float"}}
    )
    pred = model.predict_image(img, cache=None)
    assert pred.band_names == ["y"]
    expect = np.asarray(km(arr.transpose(1, 2, 0)[None]))[0, ..., 0]
    np.testing.assert_allclose(pred.to_numpy().data[0], expect, atol=1e-5)


# ---- input mapping ----------------------------------------------------------------------------
def test_stacked_input_with_the_wrong_channel_count():
    _, img = image(bands=("a", "b", "c"))
    model = Model.from_keras(conv_model(channels=2), input_tile_size=8)
    with pytest.raises(
        InputError, match=r"takes 2 channel\(s\) but the image has 3 band\(s\) \['a', 'b', 'c'\]: select 2"
    ):
        model.predict_image(img)


def test_input_shapes_declares_the_channel_count_for_callables():
    _, img = image(bands=("a", "b", "c"))
    model = Model.from_callable(lambda b: b["array"], input_tile_size=8, input_shapes={"array": [4]})
    with pytest.raises(InputError, match=r"input 'array' takes 4 channel\(s\) but the image has 3"):
        model.predict_image(img)


def test_static_input_size_fills_or_checks_the_tile_size():
    km = conv_model(size=20)
    inferred = Model.from_keras(km, input_overlap_size=2)
    assert inferred.params.input_tile_size == (16, 16)
    assert inferred.params.output_tile_size == (16, 16)
    with pytest.raises(
        InputError,
        match=r"takes 20x20 pixel inputs but input_tile_size \[16, 16\] .* = 16x16: use input_tile_size=\[20, 20\]",
    ):
        Model.from_keras(km, input_tile_size=16)


def test_replace_changes_params_keeps_the_loaded_model_and_reruns_its_checks():
    km = conv_model(size=20)
    model = Model.from_keras(km, input_overlap_size=2)
    fixed = model.replace(fix_input_proj=True)
    assert fixed.params.fix_input_proj and not model.params.fix_input_proj
    assert fixed.params.input_tile_size == (16, 16)
    x = np.ones((1, 20, 20, 2), np.float32)
    fixed.predict_batch({"array": x})
    assert model.stats.calls == 1  # one loaded model, one set of stats
    with pytest.raises(InputError, match=r"takes 20x20 pixel inputs but input_tile_size \[18, 18\]"):
        model.replace(input_tile_size=(18, 18))
    with pytest.raises(InputError, match=r"unknown parameter\(s\) \['tile'\]"):
        model.replace(tile=8)


def test_input_type_override_casts_what_the_model_receives():
    seen = {}
    _, img = image()

    def fn(batch):
        seen["dtype"] = batch["array"].dtype
        return batch["array"][..., :1].astype(np.float32)

    model = Model.from_callable(
        fn, input_tile_size=8, input_type_override={"array": "int16"}, output_bands={"o": "float"}
    )
    model.predict_image(img, cache=None).to_numpy()
    assert seen["dtype"] == np.int16


def test_keras_integer_inputs_get_their_dtype():
    inp = keras.Input((None, None, 1), dtype="int32")
    km = keras.Model(inp, keras.layers.Lambda(lambda t: keras.ops.cast(t * 2, "float32"))(inp))
    arr = np.arange(64, dtype=np.float32).reshape(1, 8, 8) + 0.4
    img = Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["n"])
    got = Model.from_keras(km, input_tile_size=8).predict_image(img, cache=None).to_numpy()
    np.testing.assert_array_equal(got.data[0], np.rint(arr[0]) * 2)


def test_input_properties_reach_per_name_models():
    _, img = image()
    img.properties = {"year": 2024.0}
    seen = {}

    def fn(batch):
        seen.update({k: v.shape for k, v in batch.items()})
        return batch["nir"] + batch["year"]

    model = Model.from_callable(
        fn,
        input_names=["nir", "year"],
        input_tile_size=8,
        input_properties=["year"],
        output_bands={"o": "float"},
    )
    out = model.predict_image(img, cache=None).to_numpy()
    assert seen == {"nir": (4, 8, 8, 1), "year": (4, 8, 8, 1)}
    assert out.data.min() > 2024
    with pytest.raises(InputError, match=r"input_properties \['season'\] are not properties of the image"):
        Model.from_callable(
            fn, input_names=["nir"], input_tile_size=8, input_properties=["season"]
        ).predict_image(img)


# ---- output mapping ----------------------------------------------------------------------------
def test_vector_output_becomes_named_bands_and_hw_outputs_are_accepted():
    _, img = image()
    vec = Model.from_callable(
        lambda b: np.stack([b["array"][..., 0] * k for k in range(4)], axis=-1),
        input_tile_size=8,
        output_bands={"p": {"type": "float", "dimensions": 1}},
    )
    assert vec.predict_image(img, cache=None).band_names == ["p_0", "p_1", "p_2", "p_3"]
    flat = Model.from_callable(lambda b: b["array"][..., 1], input_tile_size=8, output_bands={"nir": "float"})
    pred = flat.predict_image(img, cache=None)
    assert pred.band_names == ["nir"]
    np.testing.assert_array_equal(pred.to_numpy().data[0], img.to_numpy().data[1])


def test_matrix_output_flattens_to_i_j_bands():
    _, img = image()
    model = Model.from_callable(
        lambda b: np.zeros(b["array"].shape[:3] + (2, 3), np.float32),
        input_tile_size=8,
        output_bands={"m": {"type": "float", "dimensions": 2}},
    )
    assert model.predict_image(img, cache=None).band_names == [
        "m_0_0",
        "m_0_1",
        "m_0_2",
        "m_1_0",
        "m_1_1",
        "m_1_2",
    ]


def test_scalar_declared_but_vector_returned_suggests_dimensions_1():
    _, img = image()
    model = Model.from_keras(conv_model(out=3), input_tile_size=8, output_bands={"c": {"type": "float"}})
    with pytest.raises(
        ModelError, match=r"output 'c' has 3 value\(s\) per pixel .* expected 1: declare \{'dimensions': 1\}"
    ):
        model.predict_image(img, cache=None).to_numpy()


def multi_output_model() -> keras.Model:
    inp = keras.Input((None, None, 2))
    probs = keras.layers.Conv2D(3, 1, name="probs")(inp)
    ndvi = keras.layers.Conv2D(1, 1, name="ndvi")(inp)
    return keras.Model(inp, {"probs": probs, "ndvi": ndvi})


def test_multi_output_model_by_output_name():
    _, img = image()
    model = Model.from_keras(
        multi_output_model(),
        input_tile_size=8,
        output_bands={"ndvi": {"type": "float"}, "probs": {"type": "float", "dimensions": 1}},
    )
    pred = model.predict_image(img, cache=None)
    assert pred.band_names == ["ndvi", "probs_0", "probs_1", "probs_2"]
    assert pred.to_numpy().shape == (4, 16, 16)
    with pytest.raises(
        InputError,
        match=r"output_bands names 'prob' but model .* has outputs \['ndvi', 'probs'\] Did you mean 'probs'\?",
    ):
        Model.from_keras(
            multi_output_model(), input_tile_size=8, output_bands={"prob": "float"}
        ).predict_image(img)


def test_output_with_a_string_dtype_is_refused():
    model = Model.from_callable(
        lambda b: np.full(b["array"].shape, "x"), input_tile_size=8, output_bands={"o": "float"}
    )
    with pytest.raises(ModelError, match=r"output 'output' has dtype <U1: expected a numeric tensor"):
        model.predict_batch({"array": np.zeros((1, 8, 8, 1), np.float32)})


# ---- predict_batch: batching, stats, threads, errors ---------------------------------------------
def test_predict_batch_splits_by_max_batch_size_and_counts():
    model = Model.from_keras(conv_model(), input_tile_size=8, max_batch_size=4)
    out = model.predict_batch({"array": np.ones((10, 8, 8, 2), np.float32)})
    # raw outputs keep the model's own output names (here the Keras layer's)
    assert list(out) == [model.outputs[0].name]
    assert out[model.outputs[0].name].shape == (10, 8, 8, 3)
    s = model.stats.snapshot()
    assert s["calls"] == 3 and s["instances"] == 10 and s["seconds"] > 0
    model.stats.reset()
    assert model.stats.calls == 0


def test_predict_batch_is_thread_safe():
    km = conv_model()
    model = Model.from_keras(km, input_tile_size=8, max_batch_size=None)
    x = np.random.default_rng(0).random((3, 8, 8, 2)).astype(np.float32)
    expect = np.asarray(km(x))

    def work(_):
        for _ in range(10):
            (got,) = model.predict_batch({"array": x}).values()
            np.testing.assert_allclose(got, expect, atol=1e-6)

    run_in_threads(work, 4)
    assert model.stats.calls == 40 and model.stats.instances == 120


def test_a_keras_model_that_fails_gives_its_message():
    km = conv_model(channels=2)
    model = Model.from_keras(km, input_tile_size=8)
    with pytest.raises(ModelError, match=r"Model '.*' raised .*") as info:
        model.predict_batch({"array": np.ones((1, 8, 8, 5), np.float32)})
    assert info.value.model_message


def test_bad_max_batch_size():
    with pytest.raises(InputError, match="max_batch_size must be a positive integer or None"):
        Model.from_callable(lambda b: b, max_batch_size=0)


# ---- predict_properties ----------------------------------------------------------------------------
def dense_model() -> keras.Model:
    inp = keras.Input((2,))
    out = keras.layers.Dense(1, kernel_initializer="ones", bias_initializer="zeros")(inp)
    return keras.Model(inp, out)


def test_predict_properties_list_and_feature_collection():
    model = Model.from_keras(
        dense_model(), input_properties=["a", "b"], output_properties={"total": {"type": "float"}}
    )
    rows = model.predict_properties([{"a": 1, "b": 2, "id": "x"}, {"a": 3, "b": 4, "id": "y"}])
    assert rows == [{"a": 1, "b": 2, "id": "x", "total": 3.0}, {"a": 3, "b": 4, "id": "y", "total": 7.0}]
    fc = {
        "type": "FeatureCollection",
        "features": [{"type": "Feature", "geometry": None, "properties": {"a": 0.5, "b": 0.25}}],
    }
    out = model.predictProperties(fc)
    assert out["type"] == "FeatureCollection"
    assert out["features"][0]["properties"] == {"a": 0.5, "b": 0.25, "total": 0.75}
    assert fc["features"][0]["properties"] == {"a": 0.5, "b": 0.25}  # the input is not modified


def test_predict_properties_errors():
    model = Model.from_keras(dense_model(), input_properties=["a", "b"])
    with pytest.raises(InputError, match=r"Feature\(s\) \[1\] lack property 'b'"):
        model.predict_properties([{"a": 1, "b": 2}, {"a": 1}])
    with pytest.raises(InputError, match=r"Property 'a' is not numeric"):
        model.predict_properties([{"a": "high", "b": 2}])
    with pytest.raises(InputError, match=r"needs input_properties=\[\.\.\.\]"):
        Model.from_keras(dense_model()).predict_properties([{"a": 1}])
    with pytest.raises(InputError, match=r"takes a list of property dicts or a GeoJSON FeatureCollection"):
        model.predict_properties("a,b")


def test_predict_properties_integer_vector_output():
    model = Model.from_callable(
        lambda b: np.stack([b["array"][:, 0] * 2, b["array"][:, 1] * 3], axis=1),
        input_properties=["a", "b"],
        output_properties={"v": {"type": "int8", "dimensions": 1}},
    )
    assert model.predict_properties([{"a": 1.2, "b": 2}]) == [{"a": 1.2, "b": 2, "v": [2, 6]}]


# ---- EE spellings ----------------------------------------------------------------------------------
def test_camel_case_aliases():
    arr, img = image()
    model = Model.from_callable(
        lambda b: b["array"][..., :1],
        inputTileSize=[8, 8],
        inputOverlapSize=[2, 2],
        fixInputProj=True,
        outputBands={"red": {"type": "float"}},
    )
    assert model.params.fix_input_proj and model.params.overlap == (2, 2)
    got = model.predictImage(img, cache=None).to_numpy()
    np.testing.assert_array_equal(got.data[0], arr[0])


def test_saved_model_with_string_inputs_points_to_the_server(tmp_path):
    class Prepared(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="array")])
        def serve(self, array):
            return {"output": tf.strings.length(array)}

    mod = Prepared()
    tf.saved_model.save(mod, str(tmp_path / "prepared"), signatures={"serving_default": mod.serve})
    with pytest.raises(
        ModelError, match=r"takes input 'array' as object .*earthengine model prepare.*ee-model serve"
    ):
        Model.from_saved_model(tmp_path / "prepared")
