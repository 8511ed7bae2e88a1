"""Models as users bring them, with their quirks: not thread-safe, integer inputs, channels-first.

Each test drives the user API (`Model.from_*`, `predict_image`, the map layer through
`HeadlessView`) and compares with the model called directly on the same array, or expects an
error that names what is wrong and how to fix it.
"""

from __future__ import annotations

import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import ee_model_widgets as emw
from ee_model_widgets.errors import InputError
from ee_model_widgets.widgets.headless import HeadlessView
from tests.conftest import UTM19S, UTM_TRANSFORM
from tests.helpers import tile_lattice_scene

Z = 12
X0, Y0 = 2000, 1500  # the scene covers tiles X0..X0+1, Y0..Y0+1 at zoom Z: a tile is a slice of it
TILES = [(Z, X0 + i, Y0 + j) for j in range(2) for i in range(2)]


@pytest.fixture(scope="module")
def values():
    return np.random.default_rng(7).integers(1, 100, (1, 512, 512)).astype("float32")


@pytest.fixture(scope="module")
def mercator_scene(values):
    return tile_lattice_scene(values, Z, X0, Y0)


class StatefulModel:
    """A model that keeps its input in a member between two steps, as many hand-written
    wrappers do (a reused buffer, a session's feed): two concurrent calls mix their tiles."""

    def __init__(self):
        self.buffer = None
        self.started = threading.Event()
        self.overlapped = False

    def __call__(self, inputs):
        if self.started.is_set():  # another call is in progress
            self.overlapped = True
        self.started.set()
        self.buffer = inputs["array"]
        # Give a concurrent call the time to overwrite the buffer (1 s at most, run alone).
        for _ in range(100):
            if self.buffer is not inputs["array"]:
                break
            threading.Event().wait(0.01)
        out = self.buffer * 2
        self.started.clear()
        return out


def test_a_model_that_is_not_thread_safe_still_gets_the_right_tiles_on_the_map(mercator_scene, values):
    # The layer renders with two worker threads: an unguarded stateful callable gave each
    # tile the pixels of whichever tile wrote the buffer last.
    stateful = StatefulModel()
    model = emw.Model.from_callable(stateful, input_tile_size=[64, 64])
    layer = emw.PredictionLayer(
        model.predict_image(mercator_scene, cache=None), vis_params={"min": 0, "max": 255}, workers=2
    )
    try:
        view = HeadlessView(layer)
        replies = view.fetch(TILES, timeout=60)
        for (_, x, y), reply in zip(TILES, replies):
            assert reply.status == "ok"
            r, c = (y - Y0) * 256, (x - X0) * 256
            expected = np.clip(values[0, r : r + 256, c : c + 256] * 2, 0, 255).astype(np.uint8)
            assert expected.max() > 0
            assert np.array_equal(reply.rgba[..., 0], expected), f"tile {x}/{y} holds another tile's pixels"
        assert not stateful.overlapped
    finally:
        layer.close()


def test_a_callable_declared_thread_safe_is_called_concurrently():
    # The opt-in for functions that are safe (pure numpy, a REST client): calls overlap.
    both_inside = threading.Barrier(2, timeout=10)

    def fn(inputs):
        both_inside.wait()  # raises BrokenBarrierError unless two calls are inside at once
        return inputs["array"] + 1

    model = emw.Model.from_callable(fn, thread_safe=True, input_tile_size=[4, 4])
    results, errors = [], []

    def call():
        try:
            results.append(model.predict_batch({"array": np.zeros((1, 4, 4, 1), np.float32)}))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert [r["output"].max() for r in results] == [1.0, 1.0]


def test_an_integer_input_model_gets_out_of_range_values_saturated_not_wrapped():
    # A uint8 model fed 12-bit imagery (0..999): 999 became 231 (999 mod 256), a
    # plausible-looking wrong value. Casts saturate, as Earth Engine's do and as ours of outputs.
    inp = keras.Input((None, None, 1), dtype="uint8")
    km = keras.Model(inp, keras.layers.Lambda(lambda t: tf.cast(t, tf.float32) * 2.0)(inp))
    arr = np.random.default_rng(3).uniform(0, 999, (1, 32, 32)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["b"])
    got = emw.Model.from_keras(km, input_tile_size=[16, 16]).predict_image(img, cache=None).to_numpy()
    as_uint8 = np.clip(np.rint(arr), 0, 255).astype(np.uint8).transpose(1, 2, 0)[None]
    expected = km(as_uint8).numpy()[0, ..., 0]
    assert (arr > 300).any()
    assert np.array_equal(got[0], expected)
    assert got[0][arr[0] > 255].min() == 510.0

    # Through input_type_override too, into int8 (negative side included).
    model = emw.Model.from_callable(
        lambda b: b["b"].astype(np.float32), input_names=["b"], input_type_override={"b": "int8"}
    )
    out = model.predict_batch({"b": np.array([-1000.0, -3.4, 3.6, 500.0], np.float32).reshape(1, 2, 2, 1)})
    assert out["output"].ravel().tolist() == [-128.0, -3.0, 4.0, 127.0]


def nchw_model(spatial):
    """A channels-first model (as exported from PyTorch): a weighted sum of the 3 bands on axis 1."""
    inp = keras.Input((3, spatial, spatial))
    weights = tf.constant([1.0, 10.0, 100.0])[None, :, None, None]
    return keras.Model(inp, keras.layers.Lambda(lambda t: tf.reduce_sum(t * weights, axis=1))(inp))


@pytest.mark.parametrize("spatial, tile", [(32, None), (32, [32, 32]), (None, [32, 32])])
def test_a_channels_first_model_is_named_as_such_and_the_advice_works(spatial, tile):
    # Before: "takes 32 channel(s) but the image has 3 band(s): select 32", or "takes 32x3
    # pixel inputs: use input_tile_size=[32, 3]", or a TF traceback: advice that led nowhere.
    arr = np.random.default_rng(5).random((3, 64, 64)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["r", "g", "b"])
    km = nchw_model(spatial)
    kw = {} if tile is None else {"input_tile_size": tile}
    with pytest.raises(InputError) as err:
        emw.Model.from_keras(km, **kw).predict_image(img, cache=None)
    msg = str(err.value)
    assert "channels-first (N, C, H, W)" in msg and "Permute((3, 1, 2))" in msg
    assert "select 32" not in msg and "[32, 3]" not in msg

    # The advice, followed: the numbers are the channels-first model's on the same pixels.
    inp = keras.Input((spatial, spatial, 3))
    fixed = keras.Model(inp, km(keras.layers.Permute((3, 1, 2))(inp)))
    got = emw.Model.from_keras(fixed, input_tile_size=[32, 32]).predict_image(img, cache=None).to_numpy()
    tiles = [[km(arr[None, :, r : r + 32, c : c + 32]).numpy()[0] for c in (0, 32)] for r in (0, 32)]
    assert np.allclose(got[0], np.block(tiles), rtol=1e-6)


def test_a_per_pixel_dense_model_gets_a_recipe_that_gives_its_numbers():
    # A Dense model trained on sampled pixels takes (batch, bands). Before: "image models need
    # (batch, height, width[, channels]) inputs", and no way forward.
    keras.utils.set_random_seed(2)
    inp = keras.Input((3,))
    km = keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(4)(inp)))
    arr = np.random.default_rng(6).random((3, 40, 40)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["r", "g", "b"])
    with pytest.raises(InputError) as err:
        emw.Model.from_keras(km, input_tile_size=[1, 1]).predict_image(img, cache=None)
    msg = str(err.value)
    assert "has shape (None, 3): one pixel's 3 value(s) per instance" in msg
    recipe = "lambda b: np.asarray(model(b['array'].reshape(-1, 3))).reshape(*b['array'].shape[:3], -1)"
    assert recipe in msg

    # The recipe, followed: every pixel gets the Dense model's numbers.
    fn = eval(recipe, {"np": np, "model": km})  # noqa: S307 - the text the user is told to run
    got = emw.Model.from_callable(fn, input_tile_size=[16, 16]).predict_image(img, cache=None).to_numpy()
    expected = km(arr.reshape(3, -1).T).numpy().T.reshape(2, 40, 40)
    assert got.shape == (2, 40, 40) and not got.mask.any()
    assert np.allclose(got, expected, atol=1e-6)


class BufferedRuntime:
    """Like TFLite's or ONNX Runtime's outputs: results live in a buffer the next call overwrites."""

    def __init__(self):
        self.out = None

    def __call__(self, inputs):
        a = inputs["array"]
        if self.out is None or self.out.shape != a.shape:
            self.out = np.empty_like(a)
        np.multiply(a, 2.0, out=self.out)
        return {"doubled": self.out}


def test_a_model_reusing_its_output_buffer_gives_every_cell_its_own_values():
    # Batches split by max_batch_size were joined after the calls: every part was the
    # buffer's last contents, so most cells showed another cell's values.
    arr = np.random.default_rng(8).random((1, 64, 64)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v"])
    model = emw.Model.from_callable(BufferedRuntime(), input_tile_size=[16, 16], max_batch_size=4)
    got = model.predict_image(img, cache=None).to_numpy()
    assert model.stats.calls >= 4  # 16 cells in batches of 4: the buffer was reused
    assert np.array_equal(got[0], arr[0] * 2.0)


def dict_input_model():
    """B4 - 2 * B8, built on a dict whose keys (the names it is called with) are not the names
    of its Input layers."""
    b4, b8 = keras.Input((None, None, 1), name="first"), keras.Input((None, None, 1), name="second")
    out = keras.layers.Subtract()([b4, keras.layers.Rescaling(2.0)(b8)])
    return keras.Model({"B8": b8, "B4": b4}, out)


def test_a_keras_model_built_on_a_dict_of_inputs_takes_the_bands_named_by_its_keys(tmp_path):
    # Before: "has input(s) ['first', 'second'] that are neither bands": renaming the bands so
    # led to a TF traceback; the model is called with its dict keys, and they are the input names.
    from ee_model_widgets.serving.server import serve

    km = dict_input_model()
    km.save(tmp_path / "m.keras")
    arr = np.random.default_rng(9).random((2, 32, 32)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["B4", "B8"])
    expected = km({"B4": arr[0][None, ..., None], "B8": arr[1][None, ..., None]}).numpy()[0, ..., 0]
    for source in (km, str(tmp_path / "m.keras")):
        model = emw.Model.from_keras(source, input_tile_size=[16, 16])
        assert sorted(s.name for s in model.inputs) == ["B4", "B8"]
        got = model.predict_image(img, cache=None).to_numpy()
        assert np.allclose(got[0], expected, atol=1e-6) and not got.mask.any()
    # Served: the endpoint takes the same names.
    with serve(km, name="dictin") as handle:
        remote = emw.Model.from_vertex_ai(handle.url, input_tile_size=[16, 16])
        got = remote.predict_image(img, cache=None).to_numpy()
    assert np.allclose(got[0], expected, atol=1e-6) and not got.mask.any()


def test_integer_outputs_float32_bands_would_round_are_named_in_a_warning(tmp_path):
    # Segment IDs past 2**24 came out of the export rounded (16,777,217 -> 16,777,216), quietly.
    import rasterio

    ids = (np.arange(16 * 16).reshape(1, 16, 16, 1) + 2**24 + 1).astype(np.int32)
    model = emw.Model.from_callable(
        lambda b: np.repeat(ids, len(b["array"]), 0),
        input_tile_size=[16, 16],
        output_bands={"id": {"type": "int32"}},
    )
    arr = np.zeros((1, 32, 32), np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v"])
    with pytest.warns(
        UserWarning, match=r"output 'id' has integer values beyond 2\*\*24.*16,777,217 reads as 16,777,216"
    ):
        model.predict_image(img, cache=None).export(tmp_path / "ids.tif")
    with rasterio.open(tmp_path / "ids.tif") as ds:
        assert ds.read(1)[0, 0] == 2**24  # what the warning said it would read

    # Small class values stay silent.
    small = emw.Model.from_callable(
        lambda b: np.ones(b["array"].shape, np.int64),
        input_tile_size=[16, 16],
        output_bands={"c": {"type": "int32"}},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert small.predict_image(img, cache=None).to_numpy().max() == 1


def test_a_directory_that_is_not_a_saved_model_says_what_it_holds(tmp_path):
    # Before: "Cannot load the SavedModel at ... (OSError: SavedModel file does not exist ...)".
    from ee_model_widgets.errors import ModelError

    inp = keras.Input((None, None, 1))
    km = keras.Model(inp, keras.layers.Rescaling(3.0)(inp))
    km.export(str(tmp_path / "serving" / "1"), verbose=False)
    km.export(str(tmp_path / "serving" / "2"), verbose=False)  # TF Serving's version layout
    with pytest.raises(ModelError, match=r"holds SavedModel\(s\) in \['1', '2'\]: pass '.*serving/2'"):
        emw.Model.from_saved_model(tmp_path / "serving")
    model = emw.Model.from_saved_model(tmp_path / "serving" / "2", input_tile_size=[8, 8])  # the advice
    x = np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1)
    assert np.allclose(next(iter(model.predict_batch({model.inputs[0].name: x}).values())), km(x).numpy())

    (tmp_path / "kdir").mkdir()
    km.save(tmp_path / "kdir" / "m.keras")
    with pytest.raises(ModelError, match=r"holds m.keras: use Model.from_keras\('.*kdir/m.keras'\)"):
        emw.Model.from_saved_model(tmp_path / "kdir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        ModelError, match=r"is not a SavedModel directory \(no saved_model.pb\)\. It is empty"
    ):
        emw.Model.from_saved_model(tmp_path / "empty")


def test_outputs_of_two_sizes_get_pointed_to_output_bands():
    # Deep supervision: a full-size and a half-size output. Before: only "set output_tile_size",
    # which would break the full-size one.
    from ee_model_widgets.errors import ModelError

    inp = keras.Input((None, None, 3))
    full = keras.layers.Conv2D(1, 1, name="full")(inp)
    km = keras.Model(inp, {"full": full, "half": keras.layers.AveragePooling2D(2)(full)})
    arr = np.random.default_rng(4).random((3, 32, 32)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["r", "g", "b"])
    with pytest.raises(
        ModelError, match=r"keep only the outputs of that size: output_bands=\{'full': \{'type': 'float'\}\}"
    ):
        emw.Model.from_keras(km, input_tile_size=[16, 16]).predict_image(img, cache=None).to_numpy()
    fixed = emw.Model.from_keras(km, input_tile_size=[16, 16], output_bands={"full": {"type": "float"}})
    got = fixed.predict_image(img, cache=None).to_numpy()
    assert np.allclose(got[0], km(arr.transpose(1, 2, 0)[None])["full"].numpy()[0, ..., 0], atol=1e-6)


def test_a_keras_model_returning_a_dict_names_its_bands_by_the_dict_keys():
    # Its outputs were named after their layers ('conv_w', 'conv_c'): output_bands={'water': ...}
    # was refused with "the model has outputs ['conv_c', 'conv_w']", though it returns 'water'.
    keras.utils.set_random_seed(1)
    inp = keras.Input((None, None, 3))
    water = keras.layers.Conv2D(1, 1, name="conv_w")(inp)
    cloud = keras.layers.Conv2D(2, 1, name="conv_c")(inp)
    km = keras.Model(inp, {"water": water, "cloud": cloud})
    arr = np.random.default_rng(10).random((3, 32, 32)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["r", "g", "b"])
    direct = km(arr.transpose(1, 2, 0)[None])

    pred = emw.Model.from_keras(km, input_tile_size=[16, 16]).predict_image(img, cache=None)
    assert sorted(pred.band_names) == ["cloud_0", "cloud_1", "water"]
    got = pred.to_numpy()
    assert np.allclose(got[pred.band_names.index("water")], direct["water"].numpy()[0, ..., 0], atol=1e-6)
    assert np.allclose(got[pred.band_names.index("cloud_1")], direct["cloud"].numpy()[0, ..., 1], atol=1e-6)

    only = emw.Model.from_keras(km, input_tile_size=[16, 16], output_bands={"water": {"type": "float"}})
    got = only.predict_image(img, cache=None).to_numpy()
    assert np.allclose(got[0], direct["water"].numpy()[0, ..., 0], atol=1e-6)


class RowNormaliser(tf.Module):
    """A SavedModel taking (batch, height, width), no channel axis: each pixel over its row's mean."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32, name="input")])
    def serve(self, input):  # noqa: A002 - the signature's input name
        return {"out": input / tf.reduce_mean(input, axis=-1, keepdims=True)}


def test_a_saved_model_taking_batch_height_width_gets_no_channel_axis(tmp_path):
    # A signature does not check shapes: the model got (N, H, W, 1), so its axis -1 was the
    # channel axis instead of the width and every pixel came out 1.0, silently.
    module = RowNormaliser()
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    arr = np.random.default_rng(11).uniform(0.5, 1.5, (2, 32, 32)).astype(np.float32)
    one = emw.Image.from_array(arr[:1], transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v"])
    model = emw.Model.from_saved_model(tmp_path / "sm", input_tile_size=[16, 16], fix_input_proj=True)
    got = model.predict_image(one, cache=None).to_numpy()
    for r in (0, 16):
        for c in (0, 16):
            expected = module.serve(tf.constant(arr[:1, r : r + 16, c : c + 16]))["out"].numpy()[0]
            assert np.allclose(got[0, r : r + 16, c : c + 16], expected, rtol=1e-6)

    two = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v", "w"])
    with pytest.raises(InputError, match=r"\(batch, height, width\), one band, but the image has 2 bands"):
        model.predict_image(two, cache=None)


def fixed_batch_module(batch):
    """A SavedModel whose graph is built for `batch` instances (as exported for a device)."""

    class Fixed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([batch, 16, 16, 2], tf.float32, name="array")])
        def serve(self, array):
            flat = tf.reshape(array, [batch, -1])  # only right for exactly `batch` instances
            return {"out": tf.reshape(flat[:, ::2] - flat[:, 1::2], [batch, 16, 16, 1])}

    return Fixed()


@pytest.mark.parametrize("batch", [1, 4])
def test_a_saved_model_with_a_fixed_batch_size_gets_exactly_that_many_instances(tmp_path, batch):
    # Batch 1: a lone cell was sent twice (for TF's bit-stability), so the model never ran at
    # all. Batch 4: a batch of 6 cells (or a final 2) failed inside the graph.
    module = fixed_batch_module(batch)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    arr = np.random.default_rng(12).random((2, 32, 48)).astype(np.float32)  # 2 x 3 cells of 16 px
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["a", "b"])
    model = emw.Model.from_saved_model(tmp_path / "sm", fix_input_proj=True)
    got = model.predict_image(img, cache=None).to_numpy()
    for r in (0, 16):
        for c in (0, 16, 32):
            cell = arr[:, r : r + 16, c : c + 16].transpose(1, 2, 0)[None]
            expected = module.serve(tf.constant(np.repeat(cell, batch, axis=0)))["out"].numpy()[0, ..., 0]
            assert np.array_equal(got[0, r : r + 16, c : c + 16], expected)
    assert not got.mask.any()


def test_a_model_returning_only_nan_is_named_by_to_numpy_and_export(tmp_path):
    # The map said so in its notice, but to_numpy gave an all-masked array and export an
    # all-nodata GeoTIFF without a word (a TF model raises no numpy warning of its own).
    inp = keras.Input((None, None, 1))
    km = keras.Model(inp, keras.layers.Lambda(lambda t: tf.math.log(t - 2.0))(inp))  # NaN for inputs < 2
    arr = np.random.default_rng(13).random((1, 32, 32)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v"])
    model = emw.Model.from_keras(km, input_tile_size=[16, 16])
    assert np.isnan(km(arr.transpose(1, 2, 0)[None]).numpy()).all()  # what the model really gives
    match = r"returned no finite value \(only NaN or inf\) for any of the 4 cells computed so far"
    with pytest.warns(UserWarning, match=match):
        assert model.predict_image(img, cache=None).to_numpy().mask.all()
    with pytest.warns(UserWarning, match=match):
        model.predict_image(img, cache=None).export(tmp_path / "empty.tif")

    # A model with values says nothing.
    fine = emw.Model.from_keras(keras.Model(inp, keras.layers.Rescaling(2.0)(inp)), input_tile_size=[16, 16])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not fine.predict_image(img, cache=None).to_numpy().mask.any()


def test_a_valid_convolution_model_is_told_the_overlap_setup_that_gives_its_numbers():
    # A 5x5 'valid' convolution returns 28x28 for 32x32. The error only said "set
    # output_tile_size" to it, which stretches the result onto an 11.43 m grid, silently.
    from ee_model_widgets.errors import ModelError

    keras.utils.set_random_seed(3)
    inp = keras.Input((None, None, 1))
    km = keras.Model(inp, keras.layers.Conv2D(1, 5)(inp))
    arr = np.random.default_rng(14).random((1, 64, 64)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["v"])
    with pytest.raises(ModelError) as err:
        emw.Model.from_keras(km, input_tile_size=[32, 32]).predict_image(img, cache=None).to_numpy()
    assert "trims a border" in str(err.value)
    assert "use input_tile_size=[28, 28] and input_overlap_size=[2, 2]" in str(err.value)

    advised = emw.Model.from_keras(
        km, input_tile_size=[28, 28], input_overlap_size=[2, 2], fix_input_proj=True
    )
    pred = advised.predict_image(img, cache=None)
    assert pred.grid.transform.a == 10.0  # the image's own scale
    got = pred.to_numpy()
    whole = km(arr.transpose(1, 2, 0)[None]).numpy()[0, ..., 0]  # valid: rows/cols 2 .. 61
    assert np.allclose(got[0, 2:-2, 2:-2], whole, atol=1e-5)


def test_a_served_model_with_a_fixed_batch_size_answers_requests_of_any_size(tmp_path):
    # `ee-model serve` ran the whole request (6 cells here) through a [1, ...] graph: HTTP 400.
    from ee_model_widgets.serving.server import serve

    module = fixed_batch_module(1)
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    arr = np.random.default_rng(15).random((2, 32, 48)).astype(np.float32)
    img = emw.Image.from_array(arr, transform=UTM_TRANSFORM, crs=UTM19S, band_names=["a", "b"])
    with serve(tmp_path / "sm", name="fixed") as handle:
        remote = emw.Model.from_vertex_ai(handle.url, input_tile_size=[16, 16], fix_input_proj=True)
        got = remote.predict_image(img, cache=None).to_numpy()
    for r in (0, 16):
        for c in (0, 16, 32):
            cell = arr[:, r : r + 16, c : c + 16].transpose(1, 2, 0)[None]
            expected = module.serve(tf.constant(cell))["out"].numpy()[0, ..., 0]
            assert np.array_equal(got[0, r : r + 16, c : c + 16], expected)
