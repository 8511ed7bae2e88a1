"""What `Model.from_vertex_ai` puts on the wire, checked by a real HTTP server on 127.0.0.1
that records every request: Earth Engine's one-input-per-band request without metadata,
`outputMultiplier`, RAW_JSON as JSON numbers, Earth Engine's positional argument order, and
duplicate snake/camel parameters.

The recording server answers like a single-output EE model: the prediction of each instance
is its `red` input (or, for one stacked input, its first channel), so what comes back can be
compared with the image's own pixels.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from affine import Affine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ee_model_widgets.core.image import Image
from ee_model_widgets.core.model import Model
from ee_model_widgets.errors import InputError
from ee_model_widgets.serving import codec

from ..helpers import serve_app

RNG = np.random.default_rng(12)
BANDS = ["red", "green", "nir"]
PIXELS = RNG.integers(0, 1000, (3, 24, 32)).astype(np.float32)  # 3 x 4 cells of 8 px
OUT = {"out": {"type": "float"}}


def image() -> Image:
    return Image.from_array(PIXELS, transform=Affine(10, 0, 500000, 0, -10, 7000000), crs="EPSG:32719")


def scene() -> Image:
    return image().rename(BANDS)


def _numbers_only(value) -> bool:
    """True when every leaf of a JSON value is a number (what TF Serving needs for float inputs)."""
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@contextlib.contextmanager
def recording_server(metadata: dict | None = None, strict_numbers: bool = False):
    """A real server: records each request body, answers each instance with its `red` input
    (or the first channel of its one input). `metadata`: served at GET .../metadata (TF Serving's
    form) when given, else 404 there, like KServe or a Vertex endpoint. `strict_numbers`: refuse
    RAW_JSON values that are not JSON numbers with a 400, as TF Serving does."""
    bodies: list[bytes] = []

    async def predict(request: Request):
        raw = await request.body()
        bodies.append(raw)
        body = json.loads(raw)
        preds = []
        for inst in body["instances"]:
            key = "red" if "red" in inst else next(iter(inst))
            value = inst[key]
            if isinstance(value, str):
                arr = codec.decode_tensor(value)
                arr = arr[..., :1] if arr.ndim else arr * 10  # a property: its value times 10
                preds.append(codec.encode_tensor(np.ascontiguousarray(arr)))
            else:
                if strict_numbers and not _numbers_only(value):
                    return JSONResponse({"error": f"JSON Value: {str(value)[:20]} Is not a number"}, 400)
                preds.append(np.asarray(value)[..., :1].tolist())
        return JSONResponse({"predictions": preds})

    async def meta(request: Request):
        if metadata is None:
            return Response("not found", status_code=404)
        return JSONResponse(metadata)

    app = Starlette(
        routes=[
            Route("/v1/models/m/metadata", meta, methods=["GET"]),
            Route("/v1/models/{rest:path}", predict, methods=["POST"]),
        ]
    )
    with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}/v1/models/m", bodies


def tf_serving_metadata(inputs: list[str]) -> dict:
    sig = {"inputs": {k: {"name": f"{k}:0", "dtype": "DT_STRING"} for k in inputs}, "outputs": {"out": {}}}
    return {"metadata": {"signature_def": {"signature_def": {"serving_default": sig}}}}


def instances(bodies: list[bytes]) -> list[dict]:
    return [inst for b in bodies for inst in json.loads(b)["instances"]]


# ---- item 4: Earth Engine's request without metadata ----------------------------------------------


def test_without_metadata_every_band_is_its_own_input_named_after_it():
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT)
        assert model.inputs is None  # nothing known: Earth Engine's convention
        got = model.predict_image(scene(), cache=None).to_numpy()
    sent = instances(bodies)
    assert len(sent) == 12  # 3 x 4 cells
    assert all(sorted(inst) == sorted(BANDS) for inst in sent)
    for inst in sent:
        for band in BANDS:
            assert codec.decode_tensor(inst[band]).shape == (8, 8, 1)  # EE: (H, W, 1) per band
    # the first cell's green input is the image's green pixels (independent reference: the array)
    first = json.loads(bodies[0])["instances"][0]
    np.testing.assert_array_equal(codec.decode_tensor(first["green"])[..., 0], PIXELS[1, :8, :8])
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[0])  # the server echoed red


def test_input_properties_are_sent_as_inputs_too():
    img = scene()
    img.properties = {"year": 2024}  # what predict_image reads input_properties from
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], input_properties=["year"], output_bands=OUT)
        model.predict_image(img, cache=None).to_numpy()
    inst = json.loads(bodies[0])["instances"][0]
    assert sorted(inst) == sorted([*BANDS, "year"])
    year = codec.decode_tensor(inst["year"])
    assert year.shape == (8, 8, 1) and np.all(year == 2024)  # replicated into every tile instance


def test_predict_properties_sends_each_property_under_its_own_name():
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(url, input_properties=["red", "elev"])
        got = model.predict_properties([{"red": 1.5, "elev": 3}, {"red": 2.5, "elev": 4}])
    sent = instances(bodies)
    assert [sorted(i) for i in sent] == [["elev", "red"], ["elev", "red"]]
    assert codec.decode_tensor(sent[1]["elev"]) == np.float32(4)
    assert [f["output"] for f in got] == [15.0, 25.0]  # the server's answer: red * 10


def test_metadata_naming_one_stacked_input_gets_the_stacked_bands():
    with recording_server(metadata=tf_serving_metadata(["array"])) as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT)
        got = model.predict_image(scene(), cache=None).to_numpy()
    sent = instances(bodies)
    assert all(list(inst) == ["array"] for inst in sent)
    assert codec.decode_tensor(sent[0]["array"]).shape == (8, 8, 3)  # toArray(): (H, W, C)
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[0])


def test_metadata_naming_bands_sends_only_those_bands():
    with recording_server(metadata=tf_serving_metadata(["red", "nir"])) as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT)
        model.predict_image(scene(), cache=None).to_numpy()
    assert all(sorted(inst) == ["nir", "red"] for inst in instances(bodies))


def test_input_names_still_override_everything():
    with recording_server(metadata=tf_serving_metadata(["red", "nir"])) as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], input_names=["array"], output_bands=OUT)
        model.predict_image(scene(), cache=None).to_numpy()
    assert all(list(inst) == ["array"] for inst in instances(bodies))


def test_an_image_that_is_one_array_band_is_sent_stacked_under_its_name():
    # bands probs_0..probs_2: how an output with dimensions=1 is flattened, i.e. EE's array band
    probs = image().rename(["probs_0", "probs_1", "probs_2"])
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT)
        got = model.predict_image(probs, cache=None).to_numpy()
    sent = instances(bodies)
    assert all(list(inst) == ["probs"] for inst in sent)
    first = codec.decode_tensor(sent[0]["probs"])
    np.testing.assert_array_equal(first, np.moveaxis(PIXELS[:, :8, :8], 0, -1))  # (H, W, K)
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[0])


def test_a_single_band_image_is_sent_under_its_own_name():
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT)
        got = model.predict_image(scene().select(["nir"]), cache=None).to_numpy()
    sent = instances(bodies)
    assert all(list(inst) == ["nir"] for inst in sent)
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[2])


# ---- item 5: outputMultiplier ---------------------------------------------------------------------


@pytest.mark.parametrize("multiplier", [1, 4])
def test_output_multiplier_shrinks_requests_so_replies_fit(multiplier):
    limit = 40_000  # one 8x8x3-band instance is ~1.1 kB of base64: dozens fit
    with recording_server() as (url, bodies):
        model = Model.from_vertex_ai(
            url,
            input_tile_size=[8, 8],
            output_bands=OUT,
            max_payload_bytes=limit,
            outputMultiplier=multiplier,
        )
        # 96 x 96 px: 144 cells, read in one batch
        big = Image.from_array(
            np.tile(PIXELS, (1, 4, 3)), transform=Affine(10, 0, 500000, 0, -10, 7000000), crs="EPSG:32719"
        ).rename(BANDS)
        got = model.predict_image(big, cache=None).to_numpy()
    sizes = [len(b) for b in bodies]
    assert max(sizes) <= limit / multiplier
    assert max(sizes) > limit / multiplier / 2  # greedy packing: the budget is used, not wasted
    np.testing.assert_array_equal(got.filled(np.nan)[0], np.tile(PIXELS[0], (4, 3)))


def test_output_multiplier_is_named_when_an_instance_cannot_fit():
    with recording_server() as (url, _):
        model = Model.from_vertex_ai(
            url, input_tile_size=[8, 8], output_bands=OUT, max_payload_bytes=3000, output_multiplier=4
        )
        with pytest.raises(Exception, match=r"max_payload_bytes=3000 / output_multiplier=4 = 750"):
            model.predict_image(scene(), cache=None).to_numpy()


# ---- item 5: RAW_JSON as TF Serving takes it ------------------------------------------------------


def test_raw_json_sends_json_numbers_that_a_strict_server_accepts():
    with recording_server(strict_numbers=True) as (url, bodies):
        model = Model.from_vertex_ai(url, input_tile_size=[8, 8], output_bands=OUT, payload_format="RAW_JSON")
        got = model.predict_image(scene(), cache=None).to_numpy()
    inst = json.loads(bodies[0])["instances"][0]
    assert sorted(inst) == sorted(BANDS) and _numbers_only(inst["red"])
    assert np.asarray(inst["green"]).shape == (8, 8, 1)
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[0])


# ---- item 5: Earth Engine's positional order --------------------------------------------------------


def test_from_vertex_ai_takes_earth_engines_positional_order():
    with recording_server() as (url, bodies):
        # endpoint, inputProperties, inputTypeOverride, inputShapes, proj, fixInputProj, inputTileSize,
        # inputOverlapSize, outputTileSize, outputBands, outputProperties, outputMultiplier,
        # maxPayloadBytes, payloadFormat
        model = Model.fromVertexAi(
            url, None, None, None, None, False, [8, 8], [2, 2], None, OUT, None, 2, 30_000, "RAW_JSON"
        )
        p = model.params
        assert p.input_tile_size == (8, 8) and p.overlap == (2, 2) and p.output_multiplier == 2.0
        assert [b.name for b in p.output_bands] == ["out"]
        model.predict_image(scene(), cache=None).to_numpy()
    inst = json.loads(bodies[0])["instances"][0]
    assert _numbers_only(inst["red"]) and np.asarray(inst["red"]).shape == (12, 12, 1)  # RAW_JSON, 8 + 2*2
    assert max(len(b) for b in bodies) <= 15_000  # maxPayloadBytes / outputMultiplier


def test_from_ai_platform_predictor_takes_earth_engines_positional_order():
    # projectName, projectId, modelName, version, region, inputProperties, inputTypeOverride,
    # inputShapes, proj, fixInputProj, inputTileSize, ...; a token avoids Google credentials
    model = Model.fromAiPlatformPredictor(
        None, "proj", "mymodel", "v3", "europe-west1", None, None, None, None, True, [16, 16], token="t"
    )
    assert model.fingerprint == (
        "callable:rest:https://europe-west1-ml.googleapis.com/v1/projects/proj/models/mymodel/"
        "versions/v3:predict|SERIALIZED_TF_TENSORS"
    )
    assert model.params.fix_input_proj and model.params.input_tile_size == (16, 16)
    with recording_server() as (url, bodies):
        local = Model.fromAiPlatformPredictor(
            "p", None, "m", endpointUrl=url, inputTileSize=8, outputBands=OUT
        )
        got = local.predict_image(scene(), cache=None).to_numpy()
    np.testing.assert_array_equal(got.filled(np.nan)[0], PIXELS[0])


def test_too_many_positional_arguments():
    with pytest.raises(InputError, match="fromVertexAi takes at most 14 positional arguments"):
        Model.fromVertexAi(*(["http://127.0.0.1:9/v1/models/m"] + [None] * 14))


# ---- item 5: one spelling per parameter ------------------------------------------------------------

URL = "http://127.0.0.1:9/v1/models/m"


@pytest.mark.parametrize(
    "call, names",
    [
        (
            lambda: Model.from_vertex_ai(URL, max_payload_bytes=10**6, maxPayloadBytes=10**6),
            "max_payload_bytes",
        ),
        (
            lambda: Model.from_vertex_ai(URL, payload_format="RAW_JSON", payloadFormat="RAW_JSON"),
            "payload_format",
        ),
        (lambda: Model.from_vertex_ai(URL, max_concurrency=2, maxConcurrency=2), "max_concurrency"),
        (lambda: Model.from_vertex_ai(URL, max_retries=2, maxRetries=2), "max_retries"),
        (lambda: Model.from_vertex_ai(URL, input_tile_size=8, inputTileSize=8), "input_tile_size"),
        (
            lambda: Model.from_ai_platform_predictor(project_id="p", projectId="p", endpoint_url=URL),
            "project_id",
        ),
        (
            lambda: Model.from_ai_platform_predictor(model_name="m", modelName="m", endpoint_url=URL),
            "model_name",
        ),
        (lambda: Model.from_ai_platform_predictor(endpoint_url=URL, endpointUrl=URL), "endpoint_url"),
        (
            lambda: Model.from_ai_platform_predictor(
                endpoint_url=URL, max_payload_bytes=10**6, maxPayloadBytes=10**6
            ),
            "max_payload_bytes",
        ),
    ],
)
def test_a_parameter_given_under_both_spellings_is_an_error(call, names):
    with pytest.raises(InputError, match=rf"given twice: '{names}' and '\w+'.*keep only one"):
        call()


def test_a_positional_argument_also_given_by_keyword_is_an_error():
    with pytest.raises(
        InputError, match=r"'inputProperties' given both by position and as input_properties="
    ):
        Model.fromVertexAi(URL, ["year"], input_properties=["year"])
    with pytest.raises(InputError, match=r"'projectId' given both by position and as projectId="):
        Model.fromAiPlatformPredictor(None, "p", projectId="p")


def test_snake_case_constructors_stay_keyword_only():
    with pytest.raises(TypeError):
        Model.from_ai_platform_predictor("p", "m")  # EE's order would put "p" in projectName


def test_demo_model_overrides_take_one_spelling_each():
    from ee_model_widgets import demo

    with pytest.raises(InputError, match=r"given twice: 'input_overlap_size' and 'inputOverlapSize'"):
        demo.model("fcn", input_overlap_size=[0, 0], inputOverlapSize=[0, 0])
