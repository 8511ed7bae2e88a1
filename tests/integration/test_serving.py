"""The local predict server over real HTTP on 127.0.0.1 with real TensorFlow models.

TF Serving's REST API (status, metadata, row and columnar predict), Earth Engine's base64
TensorProto convention on prepared and plain models, error statuses and texts, bearer tokens,
the request size limit, server-side batching, 32 concurrent clients and graceful shutdown.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import keras
import numpy as np
import pytest

from ee_model_widgets.errors import InputError, ServingError
from ee_model_widgets.serving import codec, serve
from ee_model_widgets.serving.batcher import Batcher
from ee_model_widgets.serving.prepare import prepare_model
from ee_model_widgets.serving.servable import Servable, Signature, TensorInfo

RNG = np.random.default_rng(1)


def conv_model(channels=3, out=2, seed=0, name="array") -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((None, None, channels), name=name)
    return keras.Model(inp, keras.layers.Conv2D(out, 3, padding="same", activation="sigmoid")(inp))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("serving_models")
    km = conv_model()
    km.save(d / "m.keras")
    km.export(str(d / "exported"), verbose=False)
    prepare_model(d / "exported", d / "prepared", "array", '{"output_0": "out"}')
    # two inputs, two outputs, named after bands
    keras.utils.set_random_seed(3)
    b4, b8 = keras.Input((4, 4, 1), name="B4"), keras.Input((4, 4, 1), name="B8")
    both = keras.layers.Concatenate()([b4, b8])
    multi = keras.Model(
        {"B4": b4, "B8": b8},
        {
            "ndvi": keras.layers.Conv2D(1, 1, name="ndvi")(both),
            "cls": keras.layers.Conv2D(3, 1, name="cls")(both),
        },
    )
    multi.save(d / "multi.keras")
    return {"dir": d, "keras": km, "multi": multi}


@pytest.fixture(scope="module")
def plain_server(models):
    with serve(models["dir"] / "m.keras", name="plain") as h:
        yield h


@pytest.fixture(scope="module")
def prepared_server(models):
    with serve(models["dir"] / "prepared", name="prep") as h:
        yield h


def post(url, body, **kw):
    return httpx.post(url + ":predict", content=json.dumps(body), timeout=60, **kw)


def test_status_and_metadata_answer_like_tf_serving(plain_server, prepared_server):
    status = httpx.get(plain_server.url).json()
    assert status == {
        "name": "plain",  # KServe's v1 readiness fields beside TF Serving's
        "ready": True,
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ],
    }
    assert httpx.get(plain_server.url + "/versions/1").json() == status
    # KServe's v1 liveness probe reads "status" at the root (no path of the model shown)
    root = httpx.get(plain_server.base_url + "/").json()
    assert root == {"status": "alive", "models": ["plain"], "predict": "/v1/models/plain:predict"}
    meta = httpx.get(prepared_server.url + "/metadata").json()
    assert meta["model_spec"] == {"name": "prep", "signature_name": "", "version": "1"}
    sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sig["inputs"]["array"]["dtype"] == "DT_STRING"
    assert sig["inputs"]["array"]["tensor_shape"]["dim"] == [{"size": "-1", "name": ""}]
    assert list(sig["outputs"]) == ["out"] and sig["method_name"] == "tensorflow/serving/predict"
    plain = httpx.get(plain_server.url + "/metadata").json()["metadata"]["signature_def"]["signature_def"]
    dims = plain["serving_default"]["inputs"]["array"]["tensor_shape"]["dim"]
    assert [d["size"] for d in dims] == ["-1", "-1", "-1", "3"]


def test_plain_model_row_and_columnar_json(plain_server, models):
    x = RNG.random((2, 5, 6, 3), dtype=np.float32)
    expected = np.asarray(models["keras"](x))
    rows = post(plain_server.url, {"instances": x.tolist()})
    assert rows.status_code == 200
    np.testing.assert_allclose(np.asarray(rows.json()["predictions"]), expected, atol=1e-6)
    named = post(plain_server.url, {"instances": [{"array": t} for t in x.tolist()]})
    np.testing.assert_allclose(np.asarray(named.json()["predictions"]), expected, atol=1e-6)
    cols = post(plain_server.url, {"inputs": {"array": x.tolist()}, "signature_name": "serving_default"})
    np.testing.assert_allclose(np.asarray(cols.json()["outputs"]), expected, atol=1e-6)


def test_plain_model_speaks_earth_engine_format(plain_server, models):
    """Strings of base64 TensorProtos in, the same out: a plain model needs no prepare for us."""
    x = RNG.random((3, 8, 8, 3), dtype=np.float32)
    expected = np.asarray(models["keras"](x))
    # any key works for a single-input model (EE names it after the band, e.g. "array" or "rgb")
    r = post(plain_server.url, {"instances": [{"rgb": codec.encode_tensor(t)} for t in x]})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert all(isinstance(p, str) for p in preds)
    np.testing.assert_allclose(codec.decode_batch(preds), expected, atol=1e-6)
    # TF Serving's {"b64": ...} binary convention carries the raw TensorProto bytes
    r = post(
        plain_server.url,
        {"instances": [{"b64": base64.b64encode(codec.serialize_tensor(t)).decode()} for t in x]},
    )
    np.testing.assert_allclose(codec.decode_batch(r.json()["predictions"]), expected, atol=1e-6)


def test_prepared_model_accepts_every_base64_spelling(prepared_server, models):
    x = RNG.random((2, 6, 6, 3), dtype=np.float32) * 255  # large values: base64 with '-', '_', '+', '/'
    expected = np.asarray(models["keras"](x))
    data = [codec.serialize_tensor(t) for t in x]
    spellings = {
        "web-safe, no padding": [codec.encode_base64(b) for b in data],
        "web-safe, padded": [base64.urlsafe_b64encode(b).decode() for b in data],
        "standard alphabet": [base64.b64encode(b).decode() for b in data],
        "b64 object": [{"b64": base64.b64encode(b).decode()} for b in data],
    }
    answers = {}
    for label, values in spellings.items():
        r = post(prepared_server.url, {"instances": [{"array": v} for v in values]})
        assert r.status_code == 200, (label, r.text)
        answers[label] = r.json()["predictions"]
        np.testing.assert_allclose(codec.decode_batch(answers[label]), expected, atol=1e-6, err_msg=label)
    assert len({json.dumps(a) for a in answers.values()}) == 1  # byte-identical replies


def test_multi_input_multi_output_replies_name_the_outputs(models):
    b4 = RNG.random((3, 4, 4, 1), dtype=np.float32)
    b8 = RNG.random((3, 4, 4, 1), dtype=np.float32)
    expected = models["multi"]({"B4": b4, "B8": b8})
    with serve(models["dir"] / "multi.keras") as h:
        assert h.name == "multi"
        r = post(
            h.url,
            {
                "instances": [
                    {"B4": codec.encode_tensor(a), "B8": codec.encode_tensor(b)} for a, b in zip(b4, b8)
                ]
            },
        )
        preds = r.json()["predictions"]
        assert sorted(preds[0]) == ["cls", "ndvi"]
        for k in ("cls", "ndvi"):
            np.testing.assert_allclose(
                codec.decode_batch([p[k] for p in preds]), np.asarray(expected[k]), atol=1e-6
            )
        cols = post(h.url, {"inputs": {"B4": b4.tolist(), "B8": b8.tolist()}}).json()["outputs"]
        np.testing.assert_allclose(np.asarray(cols["cls"]), np.asarray(expected["cls"]), atol=1e-6)
        bad = post(h.url, {"instances": [{"B4": b4[0].tolist()}]})
        assert bad.status_code == 400
        assert "missing ['B8']" in bad.json()["error"]
        wrong = post(
            h.url, {"instances": [{"B4": np.zeros((5, 5, 1)).tolist(), "B8": np.zeros((5, 5, 1)).tolist()}]}
        )
        assert wrong.status_code == 400
        assert "expects instances of shape (4, 4, 1), got (5, 5, 1)" in wrong.json()["error"]


@pytest.mark.parametrize(
    "path, body, status, message",
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found for request: Latest(nope)"),
        ("/v1/models/plain/versions/7:predict", {"instances": [1]}, 404, "Specific(plain, 7)"),
        ("/v1/models/plain:classify", {"examples": []}, 400, ":classify is not supported"),
        ("/v1/models/plain:predict", b"{not json", 400, "not valid JSON"),
        ("/v1/models/plain:predict", {"instances": []}, 400, "'instances' must be a non-empty list"),
        ("/v1/models/plain:predict", {"instances": [1], "inputs": [1]}, 400, "both 'instances' and 'inputs'"),
        ("/v1/models/plain:predict", {"instances": [[[["a"]]]]}, 400, "could not convert string to float"),
        ("/v1/models/plain:predict", {"instances": ["AAAA"]}, 400, "base64 serialized TensorProto"),
        ("/v1/models/plain:predict", {"instances": [[1, 2, 3]]}, 400, "expects 3-D instances"),
        (
            "/v1/models/plain:predict",
            {"instances": [[[[1, 2, 3]]]], "signature_name": "x"},
            400,
            "'x' not found",
        ),
        ("/elsewhere", None, 404, "Try /v1/models/plain"),
        ("/V1/models/plain", None, 404, "Not Found: GET /V1/models/plain. Try /v1/models/plain."),
        ("/v1//models/plain", None, 404, "Not Found: GET /v1//models/plain. Try"),
        ("/v1/models/plain:metadata", None, 404, "use GET /v1/models/plain[/metadata]"),
        ("/v1/models/plain/labels/x", None, 404, "use /v1/models/plain/versions/1"),
        ("/v1/models/plain:predict", {"inputs": []}, 400, "has no instances"),
    ],
)
def test_errors_are_json_with_the_right_status(plain_server, path, body, status, message):
    url = plain_server.base_url + path
    if body is None:
        r = httpx.get(url)
    else:
        r = httpx.post(url, content=body if isinstance(body, bytes) else json.dumps(body))
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_a_compressed_body_is_refused_with_what_to_do(plain_server):
    import gzip

    body = gzip.compress(json.dumps({"instances": [[[[1.0, 2.0, 3.0]]]]}).encode())
    r = httpx.post(
        plain_server.base_url + "/v1/models/plain:predict",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert r.status_code == 415, r.text
    assert r.json()["error"] == "Content-Encoding: gzip is not supported; send the request body uncompressed."


def test_head_answers_like_get(plain_server):
    for path in ("/", "/v1/models/plain", "/v1/models/plain/metadata"):
        r = httpx.head(plain_server.base_url + path)
        assert r.status_code == 200 and r.content == b"", (path, r.status_code)
    assert httpx.head(plain_server.url + ":predict").status_code == 405


def test_token_and_size_limit(models):
    x = RNG.random((1, 4, 4, 3), dtype=np.float32)
    with serve(models["dir"] / "m.keras", name="secure", token="s3cret", max_request_bytes=2000) as h:
        r = post(h.url, {"instances": x.tolist()})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "no Authorization header" in r.json()["error"]
        r = post(h.url, {"instances": x.tolist()}, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and "a wrong token" in r.json()["error"]
        assert httpx.get(h.url).status_code == 401
        ok = post(h.url, {"instances": x.tolist()}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        big = RNG.random((4, 8, 8, 3), dtype=np.float32)
        r = post(h.url, {"instances": big.tolist()}, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 413
        assert "larger than this server's limit of 2000 bytes" in r.json()["error"]
        # without a Content-Length (chunked upload) the limit holds too
        chunks = iter([json.dumps({"instances": big.tolist()}).encode()])
        r = httpx.post(h.url + ":predict", content=chunks, headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 413


def test_too_many_instances_is_refused(models):
    with serve(models["dir"] / "m.keras", max_instances=3) as h:
        r = post(h.url, {"instances": np.zeros((4, 2, 2, 3)).tolist()})
        assert r.status_code == 400 and "at most 3" in r.json()["error"]


def test_32_concurrent_clients_all_get_their_own_answer(prepared_server, models):
    xs = RNG.random((32, 2, 8, 8, 3), dtype=np.float32)
    before = dict(prepared_server.stats)
    start = threading.Barrier(32)

    def one(i):
        with httpx.Client(timeout=120) as c:
            start.wait()
            r = c.post(
                prepared_server.url + ":predict",
                json={"instances": [{"array": codec.encode_tensor(t)} for t in xs[i]]},
            )
            return r.status_code, codec.decode_batch(r.json()["predictions"])

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(one, range(32)))
    expected = np.asarray(models["keras"](xs.reshape(64, 8, 8, 3))).reshape(32, 2, 8, 8, 2)
    for i, (code, got) in enumerate(results):
        assert code == 200
        np.testing.assert_allclose(got, expected[i], atol=1e-6, err_msg=f"client {i}")
    after = prepared_server.stats
    requests = after["predict_requests"] - before["predict_requests"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == 32
    assert calls < requests  # concurrent requests shared model calls
    assert after["largest_batch"] > 2


def _python_servable(fn, name="x") -> Servable:
    info = TensorInfo(name, np.dtype(np.float32), (None, 2))
    return Servable(
        {"serving_default": Signature("serving_default", {name: info}, {"y": info}, fn)}, "python function"
    )


def test_batcher_isolates_a_failing_request():
    """A request that makes the model fail must not fail the requests batched with it."""
    calls = []

    def fn(feeds):
        x = np.asarray(feeds["x"])
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return {"y": x * 2}

    sig = _python_servable(fn).signature()
    batcher = Batcher(max_batch_size=16, window_s=0.2)
    try:
        futures = [batcher.submit(sig, {"x": np.full((1, 2), v, np.float32)}) for v in (1, -1, 3)]
        results = [f.exception() or f.result() for f in futures]
    finally:
        batcher.close()
    assert calls[0] == 3  # all three went to the model together first
    np.testing.assert_array_equal(results[0]["y"], [[2, 2]])
    np.testing.assert_array_equal(results[2]["y"], [[6, 6]])
    assert isinstance(results[1], InputError) and "negative input" in str(results[1])


def test_model_failure_is_a_500_with_the_message_and_the_server_lives_on():
    def fn(feeds):
        if np.asarray(feeds["x"])[0, 0] > 100:
            raise RuntimeError("model exploded")
        return {"y": np.asarray(feeds["x"]) + 1}

    with serve(_python_servable(fn), name="fragile") as h:
        r = post(h.url, {"instances": [[1000, 0]]})
        assert r.status_code == 500 and "model exploded" in r.json()["error"]
        r = post(h.url, {"instances": [[1, 2]]})
        assert r.status_code == 200 and r.json() == {"predictions": [[2.0, 3.0]]}


def test_graceful_stop_finishes_in_flight_requests():
    started = threading.Event()

    def slow(feeds):
        started.set()
        time.sleep(1.0)
        return {"y": np.asarray(feeds["x"])}

    h = serve(_python_servable(slow), name="slow")
    url = h.url
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(post, url, {"instances": [[1, 2]]})
        assert started.wait(30)
        h.stop()
        r = fut.result()
    assert r.status_code == 200 and r.json() == {"predictions": [[1.0, 2.0]]}
    assert not h.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


def test_port_in_use_and_bad_sources_give_clear_errors(plain_server, tmp_path):
    with pytest.raises(ServingError, match=f"Cannot listen on 127.0.0.1:{plain_server.port}"):
        serve(_python_servable(lambda f: f), port=plain_server.port)
    with pytest.raises(Exception, match="No model at"):
        serve(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(Exception, match="not a SavedModel directory"):
        serve(tmp_path / "empty")
    with pytest.raises(InputError, match="may only contain"):
        serve(_python_servable(lambda f: f), name="a/b")
