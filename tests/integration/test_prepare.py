"""`ee-model prepare` against real TensorFlow models, and against the real `earthengine model prepare`.

The EE CLI (PyPI earthengine-api) switches TensorFlow to graph mode at import, so it runs in a
subprocess; it needs no credentials for local directories.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import httpx
import keras
import numpy as np
import pytest
import tensorflow as tf

from ee_model_widgets.errors import InputError
from ee_model_widgets.serving import codec, serve
from ee_model_widgets.serving.prepare import parse_node_spec, prepare_model, strip_index
from ee_model_widgets.serving.servable import load_servable, marker_contents

RNG = np.random.default_rng(7)


def run_ee_prepare(source, dest, inputs: dict, outputs: dict) -> subprocess.CompletedProcess:
    """The real `earthengine model prepare` (PrepareModelCommand.run) on a local directory."""
    code = textwrap.dedent(
        f"""
        import argparse
        from ee.cli import commands
        parser = argparse.ArgumentParser()
        cmd = commands.PrepareModelCommand(parser)
        args = parser.parse_args(["--source_dir", {str(source)!r}, "--dest_dir", {str(dest)!r},
                                  "--input", {json.dumps(inputs)!r}, "--output", {json.dumps(outputs)!r}])
        cmd.run(args, None)
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("prepare")
    keras.utils.set_random_seed(5)
    inp = keras.Input((None, None, 3), name="array")
    km = keras.Model(inp, keras.layers.Conv2D(2, 3, padding="same", activation="sigmoid")(inp))
    km.export(str(d / "exported"), verbose=False)
    km.save(d / "m.keras")
    return d, km


def predict_prepared(path, name_in, name_out, x):
    sig = load_servable(path).signature()
    assert sig.ee_wire
    out = sig.run({name_in: np.array(codec.encode_batch(x), dtype=object)})[name_out]
    return codec.decode_batch(out)


def test_keras_export_prepared_by_signature_or_graph_names(exported, tmp_path):
    d, km = exported
    x = RNG.random((3, 8, 8, 3), dtype=np.float32)
    expected = np.asarray(km(x))
    # signature keys
    a = prepare_model(d / "exported", tmp_path / "a", "array", '{"output_0": "ndvi"}')
    np.testing.assert_allclose(predict_prepared(a, "array", "ndvi", x), expected, atol=1e-6)
    # graph tensor names, as EE users pass them; ':0' is stripped from the public names
    b = prepare_model(
        d / "exported",
        tmp_path / "b",
        '{"serving_default_array:0": "rgb:0"}',
        '{"StatefulPartitionedCall_1:0": "out"}',
    )
    np.testing.assert_allclose(predict_prepared(b, "rgb", "out", x), expected, atol=1e-6)
    sig = load_servable(b).signature()
    assert list(sig.inputs) == ["rgb"] and list(sig.outputs) == ["out"]
    assert sig.inputs["rgb"].shape == (None,) and sig.inputs["rgb"].is_string
    marker = marker_contents(b)
    assert marker["inputs"]["rgb"] == {
        "model_name": "array",
        "dtype": "float32",
        "shape": [None, None, None, 3],
    }


def test_keras_file_and_tf_saved_model_sources(exported, tmp_path):
    d, km = exported
    x = RNG.random((2, 5, 7, 3), dtype=np.float32)
    expected = np.asarray(km(x))
    k = prepare_model(d / "m.keras", tmp_path / "k", "array", "output_0")
    np.testing.assert_allclose(predict_prepared(k, "array", "output_0", x), expected, atol=1e-6)

    class Scale(tf.Module):
        def __init__(self):
            self.w = tf.Variable([[2.0, -1.0]])

        @tf.function(input_signature=[tf.TensorSpec([None, 3, 2], tf.float32, name="features")])
        def __call__(self, features):
            return {"scaled": features * self.w, "total": tf.reduce_sum(features, axis=[1, 2])}

    mod = Scale()
    tf.saved_model.save(mod, str(tmp_path / "tfsm"), signatures={"serving_default": mod.__call__})
    p = prepare_model(tmp_path / "tfsm", tmp_path / "tfsm_prep", "features", "scaled,total")
    f = RNG.random((4, 3, 2), dtype=np.float32)
    sig = load_servable(p).signature()
    out = sig.run({"features": np.array(codec.encode_batch(f), dtype=object)})
    np.testing.assert_allclose(codec.decode_batch(out["scaled"]), f * [[2.0, -1.0]], atol=1e-6)
    np.testing.assert_allclose(codec.decode_batch(out["total"]), f.sum(axis=(1, 2)), atol=1e-5)
    # per-instance shape is checked by the prepared graph itself
    with pytest.raises(InputError, match="rejected the inputs"):
        sig.run({"features": np.array(codec.encode_batch(np.zeros((1, 4, 2), np.float32)), dtype=object)})


def test_non_default_variables_prefix(exported, tmp_path):
    d, km = exported
    src = tmp_path / "moved"
    shutil.copytree(d / "exported", src)
    for f in (src / "variables").iterdir():
        f.rename(src / "variables" / f.name.replace("variables.", "weights."))
    out = prepare_model(src, tmp_path / "moved_prep", "array", "output_0", variables="/variables/weights")
    x = RNG.random((1, 4, 4, 3), dtype=np.float32)
    np.testing.assert_allclose(predict_prepared(out, "array", "output_0", x), np.asarray(km(x)), atol=1e-6)
    with pytest.raises(InputError, match="no variable files"):
        prepare_model(src, tmp_path / "x", "array", "output_0", variables="/variables/nothing")


@pytest.mark.parametrize(
    "inputs, outputs, message",
    [
        ("nope", "output_0", "--input names 'nope', which is not an input of signature 'serving_default'"),
        ("array", "zzz:0", "Known names: output_0 (tensor StatefulPartitionedCall_1:0)"),
        ('["array"]', "output_0", "If flag --input is JSON it must specify a dictionary"),
        ('{"array": 3}', "output_0", "must be strings"),
        ("array", '{"output_0": "a", "StatefulPartitionedCall_1:0": "b"}', "maps 'output_0' twice"),
    ],
)
def test_mapping_errors_name_the_problem(exported, tmp_path, inputs, outputs, message):
    d, _ = exported
    with pytest.raises(InputError) as err:
        prepare_model(d / "exported", tmp_path / "out", inputs, outputs)
    assert message in str(err.value)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_signature_the_model_lacks_is_an_error_not_another_signature(exported, tmp_path):
    d, _ = exported
    with pytest.raises(InputError) as err:
        prepare_model(d / "m.keras", tmp_path / "out", "array", "output_0", signature="serving_custom")
    assert "has no signature 'serving_custom'; it has ['serving_default']" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_destination_and_source_errors(exported, tmp_path):
    d, _ = exported
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="already exists and is not empty"):
        prepare_model(d / "exported", tmp_path / "full", "array", "output_0")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(InputError, match="does not exist"):
        prepare_model(tmp_path / "missing", tmp_path / "o", "array", "output_0")
    with pytest.raises(InputError, match="Cloud Storage is not supported"):
        prepare_model("gs://bucket/model", tmp_path / "o", "array", "output_0")
    prepared = prepare_model(d / "exported", tmp_path / "once", "array", "output_0")
    with pytest.raises(InputError, match="already a string tensor"):
        prepare_model(prepared, tmp_path / "twice", "array", "output_0")


def test_node_spec_syntax_like_the_ee_cli():
    assert parse_node_spec("a:0, b") == {"a:0": "a:0", "b": "b"}
    assert parse_node_spec('{"Conv2D:0": "my_band"}') == {"Conv2D:0": "my_band"}
    assert strip_index("StatefulPartitionedCall:1") == "StatefulPartitionedCall"
    with pytest.raises(InputError, match="at least one"):
        parse_node_spec(" , ")


def test_ours_and_earthengine_prepare_are_interchangeable(tmp_path):
    """The demo fcn prepared by the real EE CLI and by ours: the same replies to the same request
    body, and `predict_image` through either equals the local model."""
    from ee_model_widgets import demo
    from ee_model_widgets.core.model import Model

    km = keras.saving.load_model(demo.model_path("fcn"))
    km.export(str(tmp_path / "exported"), verbose=False)
    in_map = {"serving_default_red:0": "red", "serving_default_nir:0": "nir"}
    out_map = {"StatefulPartitionedCall_1:0": "ndvi_smooth"}
    ee = run_ee_prepare(tmp_path / "exported", tmp_path / "ee", in_map, out_map)
    assert ee.returncode == 0, ee.stderr[-2000:]
    assert "ready to be hosted" in ee.stdout
    ours = prepare_model(tmp_path / "exported", tmp_path / "ours", json.dumps(in_map), json.dumps(out_map))

    red = RNG.random((3, 16, 16, 1), dtype=np.float32)
    nir = RNG.random((3, 16, 16, 1), dtype=np.float32)
    body = {
        "instances": [
            {"red": codec.encode_tensor(r), "nir": codec.encode_tensor(n)} for r, n in zip(red, nir)
        ]
    }
    scene = demo.scene()
    local = demo.model("fcn").predict_image(scene).to_numpy()
    replies = {}
    for label, path in (("ee", tmp_path / "ee"), ("ours", ours)):
        with serve(path, name="fcn") as h:
            meta = httpx.get(h.url + "/metadata").json()["metadata"]["signature_def"]["signature_def"]
            assert sorted(meta["serving_default"]["inputs"]) == ["nir", "red"]
            assert list(meta["serving_default"]["outputs"]) == ["ndvi_smooth"]
            r = httpx.post(h.url + ":predict", json=body, timeout=60)
            assert r.status_code == 200, r.text
            replies[label] = r.json()
            remote = (
                Model.from_vertex_ai(h.url, **demo.MODEL_PARAMS["fcn"])
                .predict_image(scene, cache=None)
                .to_numpy()
            )
            np.testing.assert_array_equal(np.ma.getmaskarray(remote), np.ma.getmaskarray(local))
            assert float(np.max(np.abs(remote.filled(0) - local.filled(0)))) < 1e-5, label
    assert replies["ee"] == replies["ours"]  # byte-identical predictions
    expected = km({"red": red, "nir": nir})
    np.testing.assert_allclose(
        codec.decode_batch(replies["ours"]["predictions"]), np.asarray(expected), atol=1e-6
    )
