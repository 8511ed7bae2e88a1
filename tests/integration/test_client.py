"""`Model.from_vertex_ai` against real HTTP servers on 127.0.0.1.

The demo scene predicted through our server (plain .keras, prepared by us) equals the local
model; payload splitting, the three JSON payload
formats, and every fault a user meets (server down, 500, 429/503 then success, a slow reply,
garbage, a wrong prediction count, 401, 413, an instance over the payload limit). The faulty
endpoints are tiny starlette apps served by uvicorn: real HTTP servers, scripted answers.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time

import keras
import numpy as np
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ee_model_widgets import demo
from ee_model_widgets.core.model import Model
from ee_model_widgets.errors import EEModelWidgetsError, InputError, ServingError
from ee_model_widgets.serving import client, codec, serve
from ee_model_widgets.serving.prepare import prepare_model
from ee_model_widgets.serving.server import bind_socket

from ..helpers import serve_app

FCN = demo.MODEL_PARAMS["fcn"]


@pytest.fixture(scope="module")
def scene():
    return demo.scene()  # 300 x 200 px: 3 x 2 cells of 128 px (144 px with the overlap)


@pytest.fixture(scope="module")
def local_prediction(scene):
    return demo.model("fcn").predict_image(scene).to_numpy()


@pytest.fixture(scope="module")
def fcn_server():
    with serve(demo.model_path("fcn"), name="fcn") as h:
        yield h


def assert_same(got, expected):
    assert got.shape == expected.shape
    np.testing.assert_array_equal(np.ma.getmaskarray(got), np.ma.getmaskarray(expected))
    assert float(np.max(np.abs(got.filled(0) - expected.filled(0)))) < 1e-5


# ---- same answers as the local model ------------------------------------------------------------


def test_served_keras_model_equals_local_model(fcn_server, scene, local_prediction):
    model = Model.from_vertex_ai(fcn_server.url, **FCN)
    assert model.inputs is not None and sorted(s.name for s in model.inputs) == [
        "nir",
        "red",
    ]  # from /metadata
    before = fcn_server.stats["predict_requests"]
    assert_same(model.predict_image(scene, cache=None).to_numpy(), local_prediction)
    assert fcn_server.stats["predict_requests"] > before


def test_model_prepared_by_us_equals_local_model(tmp_path, scene, local_prediction):
    # (the model prepared by the real `earthengine model prepare` is checked in test_prepare.py)
    ours = prepare_model(
        demo.model_path("fcn"), tmp_path / "ours", "red,nir", '{"ndvi_smooth": "ndvi_smooth"}'
    )
    with serve(ours, name="fcn") as h:
        model = Model.fromVertexAi(h.url, **FCN)
        assert_same(model.predictImage(scene, cache=None).to_numpy(), local_prediction)


def test_payload_splitting_keeps_every_request_under_the_limit(scene, local_prediction):
    with serve(demo.model_path("fcn"), name="fcn") as h:
        # one instance = red + nir, 144 x 144 float32 each: ~221 kB of base64, so two per request
        limit = 500_000
        model = Model.from_vertex_ai(h.url, max_payload_bytes=limit, **FCN)
        assert_same(model.predict_image(scene, cache=None).to_numpy(), local_prediction)
        stats = h.stats
        assert stats["instances"] >= 6
        assert stats["predict_requests"] >= stats["instances"] / 2
        assert limit / 2 < stats["largest_request_bytes"] <= limit


def test_raw_json_numbers(fcn_server, scene, local_prediction):
    model = Model.from_vertex_ai(fcn_server.url, payload_format="RAW_JSON", **FCN)
    assert_same(model.predict_image(scene, cache=None).to_numpy(), local_prediction)


def test_nd_arrays_channels_first(tmp_path, scene, local_prediction):
    """ND_ARRAYS sends [C][H][W] without names (PyTorch style): a channels-first wrapper of fcn."""
    km = keras.saving.load_model(demo.model_path("fcn"))
    chw = keras.Input((2, None, None), name="chw")
    hwc = keras.layers.Permute((2, 3, 1))(chw)
    red, nir = (
        keras.layers.Lambda(lambda t: t[..., 0:1])(hwc),
        keras.layers.Lambda(lambda t: t[..., 1:2])(hwc),
    )
    out = keras.layers.Permute((3, 1, 2))(km({"red": red, "nir": nir}))
    torch_like = keras.Model(chw, out)
    torch_like.export(str(tmp_path / "chw"), verbose=False)
    with serve(tmp_path / "chw", name="chw") as h:
        # the model has one input, so the band order must be given: red first, as the wrapper expects
        model = Model.from_vertex_ai(h.url, payload_format="ND_ARRAYS", input_names=["red", "nir"], **FCN)
        assert_same(model.predict_image(scene, cache=None).to_numpy(), local_prediction)


def test_ai_platform_predictor_and_camel_case(fcn_server, scene, local_prediction):
    model = Model.fromAiPlatformPredictor(
        projectId="p",
        modelName="fcn",
        endpointUrl=fcn_server.url,
        inputTileSize=[128, 128],
        inputOverlapSize=[8, 8],
    )
    before = fcn_server.stats["predict_requests"]
    assert_same(model.predict_image(scene, cache=None).to_numpy(), local_prediction)
    assert fcn_server.stats["predict_requests"] > before
    with pytest.raises(InputError, match="needs project_id and model_name"):
        Model.from_ai_platform_predictor(model_name="m")


# ---- endpoints and formats ------------------------------------------------------------------------


def test_endpoint_forms():
    assert client.predict_url("http://h:8501/v1/models/m") == "http://h:8501/v1/models/m:predict"
    assert client.predict_url("http://h/v1/models/m/") == "http://h/v1/models/m:predict"
    assert client.predict_url("https://h/v1/models/m:predict") == "https://h/v1/models/m:predict"
    assert (
        client.predict_url("projects/p/locations/europe-west4/endpoints/123")
        == "https://europe-west4-aiplatform.googleapis.com/v1/projects/p/locations/europe-west4/endpoints/123:predict"
    )
    with pytest.raises(InputError, match="neither an http"):
        client.predict_url("my-endpoint")


def test_grpc_and_unknown_formats_list_what_is_supported():
    with pytest.raises(InputError, match="needs gRPC.*SERIALIZED_TF_TENSORS, RAW_JSON, ND_ARRAYS"):
        Model.from_vertex_ai("http://127.0.0.1:9/v1/models/m", payload_format="GRPC_SERIALIZED_TF_TENSORS")
    with pytest.raises(InputError, match="needs gRPC"):  # Earth Engine's camelCase spelling
        Model.fromVertexAi(
            "http://127.0.0.1:9/v1/models/m", payloadFormat="GRPC_TF_TENSORS", maxPayloadBytes=10**6
        )
    with pytest.raises(InputError, match="Unknown payload_format 'JSONL'"):
        client.RestPredictor("http://127.0.0.1:9/v1/models/m", payload_format="JSONL")


def test_vertex_name_without_google_auth_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.auth", None)
    monkeypatch.setitem(sys.modules, "google.auth.transport.requests", None)
    with pytest.raises(ServingError, match=r"pip install 'ee_model_widgets\[google\]'"):
        Model.from_vertex_ai("projects/p/locations/us-central1/endpoints/1", input_tile_size=[8, 8])


# ---- faults -------------------------------------------------------------------------------------------


@contextlib.contextmanager
def scripted_server(handler):
    """A real HTTP server on 127.0.0.1 whose POST answers come from `handler(request, n)`."""
    count = {"n": 0}

    async def endpoint(request: Request):
        count["n"] += 1
        body = await request.body()
        return await handler(json.loads(body), count["n"])

    app = Starlette(routes=[Route("/v1/models/{rest:path}", endpoint, methods=["POST"])])
    with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}/v1/models/m", count


def echo_predictions(body):
    """Return each instance's input tensor, as a single-output EE model would."""
    return Response(json.dumps({"predictions": [inst["array"] for inst in body["instances"]]}))


X = np.arange(2 * 3 * 3 * 1, dtype=np.float32).reshape(2, 3, 3, 1)


def predictor(url, **kw):
    kw.setdefault("backoff", 0.01)
    return client.RestPredictor(url, **kw)


def test_429_then_success_is_retried():
    async def handler(body, n):
        if n == 1:
            return Response(json.dumps({"error": "slow down"}), status_code=429, headers={"Retry-After": "0"})
        return echo_predictions(body)

    with scripted_server(handler) as (url, count):
        p = predictor(url)
        np.testing.assert_array_equal(p({"array": X}), X)
        assert count["n"] == 2 and p.stats["retries"] == 1


def test_503_until_retries_run_out():
    async def handler(body, n):
        return Response(json.dumps({"error": "model is loading"}), status_code=503)

    with scripted_server(handler) as (url, count):
        with pytest.raises(
            ServingError, match=r"HTTP 503 Service Unavailable: model is loading.*after 2 retries"
        ):
            predictor(url, max_retries=2)({"array": X})
        assert count["n"] == 3


def test_retries_wait_the_servers_retry_after_then_an_exponential_backoff():
    arrivals = []

    async def handler(body, n):
        arrivals.append(time.monotonic())
        if n == 1:
            return Response(json.dumps({"error": "busy"}), status_code=503, headers={"Retry-After": "1"})
        if n == 2:  # not seconds nor an HTTP date: the backoff applies, the call does not fail
            return Response(
                json.dumps({"error": "bad gateway"}), status_code=502, headers={"Retry-After": "soon"}
            )
        if n == 3:
            return Response(json.dumps({"error": "timeout"}), status_code=504)
        return echo_predictions(body)

    with scripted_server(handler) as (url, count):
        p = predictor(url, backoff=0.2, max_retries=3)
        np.testing.assert_array_equal(p({"array": X}), X)
    assert count["n"] == 4 and p.stats["retries"] == 3
    gaps = np.diff(arrivals)
    # Retry-After: 1 s; then 0.2 * 2 and 0.2 * 4 s (urllib3 retries at once only after a first failure
    # that gave no Retry-After)
    assert gaps[0] >= 0.95 and gaps[1] >= 0.4 and gaps[2] >= 0.8, gaps


def test_500_carries_the_server_error_text():
    async def handler(body, n):
        return Response(json.dumps({"error": "Input to reshape is a tensor with 9 values"}), status_code=500)

    with scripted_server(handler) as (url, count):
        with pytest.raises(
            ServingError, match="HTTP 500 Internal Server Error: Input to reshape is a tensor with 9"
        ):
            predictor(url)({"array": X})
        assert count["n"] == 1  # a 500 is not retried


def test_nan_and_infinity_tokens_in_a_reply_are_numbers():
    # TF Serving writes non-finite floats as bare NaN / Infinity tokens, which strict JSON
    # parsers (orjson) refuse: the client must still read them
    async def handler(body, n):
        rows = ["[[NaN], [Infinity], [-Infinity]]", "[[1.5], [2], [3]]"]
        return Response('{"predictions": [' + ", ".join(rows) + "]}")

    with scripted_server(handler) as (url, _):
        got = predictor(url, payload_format="RAW_JSON")({"array": X[:, :3, :1]})
    assert got.shape == (2, 3, 1) and got.dtype == np.float32
    assert np.isnan(got[0, 0, 0]) and got[0, 1, 0] == np.inf and got[0, 2, 0] == -np.inf
    np.testing.assert_array_equal(got[1, :, 0], [1.5, 2, 3])


@pytest.mark.parametrize(
    "reply, message",
    [
        (Response("<html>oops</html>", media_type="text/html"), r"not JSON \(text/html"),
        (Response(json.dumps({"predictions": ["x"]})), "returned 1 predictions for 2 instances"),
        (Response(json.dumps({"outputs": []})), "without 'predictions'"),
        (Response(json.dumps({"predictions": ["!!", "!!"]})), "not a base64 serialized TensorProto"),
        (Response(json.dumps({"error": "Prediction failed"})), "answered an error: Prediction failed"),
        (
            Response(json.dumps({"predictions": [[0.0], [0.0]], "error": "model failed, zeros sent"})),
            "answered an error next to its predictions: model failed, zeros sent",
        ),
    ],
)
def test_garbage_replies(reply, message):
    async def handler(body, n):
        return reply

    with scripted_server(handler) as (url, _):
        with pytest.raises(ServingError, match=message):
            predictor(url)({"array": X})


def _shape_only_proto(*dims: int) -> str:
    """Web-safe base64 of a float TensorProto that declares `dims` and carries no values (87-byte bombs)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape)
    return codec.encode_base64(proto.SerializeToString())


def test_a_reply_declaring_a_huge_shape_is_refused_before_allocating():
    # a broken or hostile endpoint must not be able to make a few bytes allocate gigabytes in the kernel
    bomb = _shape_only_proto(20000, 20000, 1)

    async def handler(body, n):
        return Response(json.dumps({"predictions": [bomb] * len(body["instances"])}))

    with scripted_server(handler) as (url, _):
        with pytest.raises(ServingError, match=r"far larger than a tile.*400000000 elements"):
            predictor(url)({"array": X})


def test_slow_reply_times_out_without_hanging():
    import asyncio

    async def handler(body, n):
        await asyncio.sleep(2)
        return echo_predictions(body)

    with scripted_server(handler) as (url, _):
        t0 = time.monotonic()
        with pytest.raises(ServingError, match=r"No reply from .* within timeout=0.5 s"):
            predictor(url, timeout=0.5)({"array": X})
        assert time.monotonic() - t0 < 2  # gave up before the server answered


def test_a_reply_trickled_a_byte_at_a_time_times_out():
    # the socket timeout bounds each read only: a server sending one byte every 0.2 s never
    # trips it, and held the tile for as long as its reply lasted
    import asyncio

    from starlette.responses import StreamingResponse

    async def handler(body, n):
        if n > 1:
            return echo_predictions(body)
        payload = b" " * 100 + echo_predictions(body).body  # ~20 s of trickle for a 1 s timeout

        async def trickle():
            for i in range(len(payload)):
                yield payload[i : i + 1]
                await asyncio.sleep(0.2)

        return StreamingResponse(trickle(), media_type="application/json")

    with scripted_server(handler) as (url, _):
        p = predictor(url, timeout=1.0, max_concurrency=1)
        t0 = time.monotonic()
        with pytest.raises(ServingError, match=r"did not finish its reply within timeout=1 s"):
            p({"array": X})
        assert time.monotonic() - t0 < 5
        # the abandoned connection went back to the pool: the next call gets one and its answer
        np.testing.assert_array_equal(p({"array": X}), X)


def test_a_503_whose_body_never_ends_is_retried_without_reading_it():
    import asyncio

    from starlette.responses import StreamingResponse

    async def handler(body, n):
        if n > 1:
            return echo_predictions(body)

        async def trickle():
            for _ in range(100):  # ~20 s
                yield b" "
                await asyncio.sleep(0.2)

        return StreamingResponse(trickle(), status_code=503, headers={"Retry-After": "0"})

    with scripted_server(handler) as (url, count):
        t0 = time.monotonic()
        np.testing.assert_array_equal(predictor(url, timeout=1.0)({"array": X}), X)
        assert time.monotonic() - t0 < 5 and count["n"] == 2


def test_a_trickling_metadata_reply_does_not_hold_up_the_constructor():
    import asyncio

    from starlette.responses import StreamingResponse

    async def metadata(request: Request):
        async def trickle():
            for _ in range(100):  # ~20 s of whitespace before a (never sent) signature
                yield b" "
                await asyncio.sleep(0.2)

        return StreamingResponse(trickle(), media_type="application/json")

    app = Starlette(routes=[Route("/v1/models/m/metadata", metadata)])
    with serve_app(app) as port:
        t0 = time.monotonic()
        Model.from_vertex_ai(f"http://127.0.0.1:{port}/v1/models/m", timeout=1.0, input_tile_size=[8, 8])
        assert time.monotonic() - t0 < 5


def test_reply_headers_trickled_a_byte_at_a_time_time_out():
    # uvicorn cannot trickle headers: a bare socket server does, one byte every 0.2 s (~10 s)
    import threading

    listener = bind_socket("127.0.0.1", 0)
    listener.listen(4)

    def answer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the request (small enough to come in one read)
            body = json.dumps({"predictions": X.tolist()}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            try:
                for ch in head.encode():
                    conn.sendall(bytes([ch]))
                    time.sleep(0.2)
                conn.sendall(body)
            except OSError:
                pass  # the client gave up

    threading.Thread(target=answer, daemon=True).start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/models/m"
    t0 = time.monotonic()
    try:
        with pytest.raises(ServingError, match=r"No reply from .* within timeout=1 s"):
            predictor(url, timeout=1.0, payload_format="RAW_JSON")({"array": X})
        assert time.monotonic() - t0 < 5
    finally:
        listener.close()


def test_an_endless_reply_is_refused_before_it_fills_memory():
    from starlette.responses import StreamingResponse

    async def handler(body, n):
        async def endless():  # chunked: no Content-Length to refuse up front
            for _ in range(100):
                yield b" " * (1 << 20)
            yield echo_predictions(body).body  # valid JSON after 100 MiB of whitespace

        return StreamingResponse(endless(), media_type="application/json")

    with scripted_server(handler) as (url, _):
        p = predictor(url, max_payload_bytes=100_000)  # replies up to max(16 x 100 kB, 64 MiB)
        with pytest.raises(
            ServingError, match=r"sent a reply of more than 67108864 bytes.*raise max_payload_bytes"
        ):
            p({"array": X})
    assert p.max_reply_bytes == 64 << 20


def test_a_declared_enormous_reply_is_refused_without_reading_it():
    async def handler(body, n):
        return Response(b"{}", headers={"Content-Length": str(10**12)})

    with scripted_server(handler) as (url, _):
        with pytest.raises(ServingError, match=r"sent a reply of more than \d+ bytes"):
            predictor(url, timeout=2.0)({"array": X})


def test_a_server_closing_mid_reply_is_named_as_such():
    from starlette.responses import StreamingResponse

    async def handler(body, n):
        async def half():
            yield echo_predictions(body).body[:40]
            raise RuntimeError("worker died")

        return StreamingResponse(half(), media_type="application/json")

    with scripted_server(handler) as (url, _):
        with pytest.raises(ServingError, match=r"broke off its reply .*closed the connection mid-reply"):
            predictor(url, max_retries=0)({"array": X})


def test_a_redirect_to_another_host_does_not_carry_the_callers_secrets():
    seen = []

    async def other(request: Request):
        seen.append(dict(request.headers))
        return echo_predictions(json.loads(await request.body()))

    other_app = Starlette(routes=[Route("/v1/models/{rest:path}", other, methods=["POST"])])
    with serve_app(other_app) as other_port:

        async def handler(body, n):  # "localhost" is another host than 127.0.0.1 to a client
            where = f"http://localhost:{other_port}/v1/models/m:predict"
            return Response(status_code=307, headers={"Location": where})

        with scripted_server(handler) as (url, _):
            p = predictor(url, token="tok", headers={"X-Api-Key": "secret"}, payload_format="RAW_JSON")
            np.testing.assert_array_equal(p({"array": X}), X)
    assert len(seen) == 1 and "x-api-key" not in seen[0] and "authorization" not in seen[0]


def test_https_to_a_plain_http_server_says_to_use_http():
    async def handler(body, n):
        return echo_predictions(body)

    with scripted_server(handler) as (url, count):
        with pytest.raises(ServingError, match=r"answered in plain HTTP, not HTTPS.*endpoint with http://"):
            predictor(url.replace("http://", "https://"), max_retries=0)({"array": X})
        assert count["n"] == 0


def test_server_down():
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/models/m"
    sock.close()  # nothing listens there any more
    p = predictor(url, max_retries=2)
    with pytest.raises(ServingError, match="Cannot reach .* after 3 attempt.*Is the server running"):
        p({"array": X})
    assert p.stats["retries"] == 2


def test_401_and_413_from_our_server(scene):
    x = np.zeros((1, 16, 16, 2), np.float32)
    with serve(demo.model_path("fcn"), name="fcn", token="t0k", max_request_bytes=3000) as h:
        with pytest.raises(ServingError, match="HTTP 401 Unauthorized: Unauthorized.*pass token="):
            predictor(h.url)({"red": x[..., :1], "nir": x[..., 1:]})
        ok = predictor(h.url, token="t0k")({"red": x[..., :1], "nir": x[..., 1:]})
        assert ok.shape == (1, 16, 16, 1)
        big = np.zeros((1, 32, 32, 1), np.float32)
        with pytest.raises(ServingError, match="HTTP 413.*limit of 3000 bytes.*lower max_payload_bytes"):
            predictor(h.url, token="t0k")({"red": big, "nir": big})


def test_one_instance_over_the_limit_names_both_sizes():
    p = client.RestPredictor("http://127.0.0.1:9/v1/models/m", max_payload_bytes=10_000)
    with pytest.raises(
        ServingError, match=r"takes \d+ bytes .* over max_payload_bytes=10000: use a smaller input_tile_size"
    ):
        p({"array": np.zeros((1, 64, 64, 3), np.float32)})


def test_errors_reach_predict_image_as_our_errors(scene):
    with serve(demo.model_path("fcn"), name="fcn", token="t0k") as h:
        model = Model.from_vertex_ai(h.url, max_retries=0, input_names=["red", "nir"], **FCN)
        with pytest.raises(EEModelWidgetsError, match="401"):
            model.predict_image(scene, cache=None).to_numpy()
