"""What travels to a dask worker: models as their spec, locks and caches new, loaded once."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from affine import Affine

from ee_model_widgets import Image, Model
from ee_model_widgets.core import portable
from ee_model_widgets.errors import ModelError


def scene():
    arr = np.arange(2 * 40 * 40, dtype=np.float32).reshape(2, 40, 40) + 1
    return Image.from_array(
        arr, transform=Affine(10, 0, 0, 0, -10, 0), crs="EPSG:32719", band_names=["a", "b"]
    )


def test_a_prediction_travels_with_its_model_spec_and_computes_the_same_pixels():
    offset = 3.0  # a closure: pickled by value, like a function defined in a notebook
    model = Model.from_callable(lambda b: b["array"][..., :1] * 2 + offset, input_tile_size=16)
    pred = model.predict_image(scene())
    expected = pred.to_numpy()
    blob = portable.dumps(pred)
    back = pickle.loads(blob)  # what a worker does (once per process, through load_image)
    assert back is not pred and back.model is not model
    assert back.model.fingerprint == model.fingerprint and back.model.params == model.params
    assert back.cache is not pred.cache and len(back.cache) == 0  # caches are per process
    np.testing.assert_array_equal(back.to_numpy(), expected)
    # The model is loaded once per process, whatever the number of images that use it.
    again = pickle.loads(portable.dumps(model.predict_image(scene())))
    assert again.model._call is back.model._call


def test_a_resampled_image_travels_with_its_resampling():
    from ee_model_widgets.core.grid import Grid

    img = scene().resample("bilinear")
    grid = Grid("EPSG:32719", Affine(4, 0, 3, 0, -4, -3), 90, 90)  # 4 m pixels: resampled
    expected = img.read(grid)
    assert not expected.mask.all()
    back = pickle.loads(portable.dumps(img))
    np.testing.assert_array_equal(back.read(grid), expected)
    assert not np.array_equal(back.read(grid), scene().read(grid))  # not nearest again


def test_load_image_unpickles_once_per_key():
    blob = portable.dumps(scene())
    key = portable.token(blob)
    assert portable.load_image(blob, key) is portable.load_image(blob, key)


def test_a_rest_model_travels_as_its_endpoint_without_connections():
    model = Model.from_vertex_ai("http://127.0.0.1:9/v1/models/m", discover=False, input_tile_size=8)
    predictor = model.spec.source
    predictor._http()  # an open connection pool and thread pool, as after a first call
    back = pickle.loads(portable.dumps(model))
    got = back.spec.source
    assert got is not predictor and got.url == predictor.url == "http://127.0.0.1:9/v1/models/m:predict"
    assert got._client is None and got._pool is None  # opened again on the worker when needed
    predictor.close()


def test_a_model_that_cannot_describe_itself_is_refused_with_the_fix():
    from ee_model_widgets.core.params import EEParams

    bare = Model(
        lambda b: next(iter(b.values()))[..., :1],
        EEParams.from_kwargs(input_tile_size=8),
        name="bare",
        fingerprint="x",
    )
    with pytest.raises(
        ModelError, match=r"'bare' cannot be sent to workers: it was not built by a Model.from_\*"
    ):
        portable.dumps(bare.predict_image(scene()))
