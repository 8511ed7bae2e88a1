"""Interop with KServe 0.21, a serving stack we did not write (run by `make test-kserve`, in
its own venv .venv-kserve; skipped where KServe is not installed).

- KServe's own REST client (`InferenceRESTClient`, protocol v1) against `ee-model serve`:
  predict, `is_server_live`, `is_model_ready`;
- `Model.from_vertex_ai` against KServe's `ModelServer` serving the demo model prepared by the
  real `earthengine model prepare`, with no `input_names` (KServe has no `/metadata`, so the
  client sends Earth Engine's one-input-per-band request), equal to the local model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

kserve = pytest.importorskip("kserve", reason="KServe interop runs in .venv-kserve: `make test-kserve`")

import httpx  # noqa: E402
import keras  # noqa: E402

from ee_model_widgets import demo  # noqa: E402
from ee_model_widgets.core.model import Model  # noqa: E402
from ee_model_widgets.serving import codec, serve  # noqa: E402

pytestmark = pytest.mark.timeout(600)
SERVER_SCRIPT = Path(__file__).with_name("ee_kserve_server.py")
RNG = np.random.default_rng(21)


def _run(coro):
    return asyncio.run(coro)


# ---- KServe's client against ee-model serve ----------------------------------------------------------


@pytest.fixture(scope="module")
def fcn_server():
    with serve(demo.model_path("fcn"), name="fcn") as h:
        yield h


def _base(handle) -> str:
    return handle.url.split("/v1/", 1)[0]


def test_kserve_rest_client_predicts_through_our_server(fcn_server):
    from kserve import InferenceRESTClient, RESTConfig

    red = RNG.random((2, 16, 16, 1), dtype=np.float32)
    nir = RNG.random((2, 16, 16, 1), dtype=np.float32)
    body = {
        "instances": [
            {"red": codec.encode_tensor(r), "nir": codec.encode_tensor(n)} for r, n in zip(red, nir)
        ]
    }

    async def go():
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=60)) as client:
            return await client.infer(_base(fcn_server), body, model_name="fcn")

    reply = _run(go())
    got = np.stack([codec.decode_tensor(p) for p in reply["predictions"]])
    km = keras.saving.load_model(demo.model_path("fcn"))
    expected = np.asarray(km({"red": red, "nir": nir}))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_kserve_rest_client_probes_our_server(fcn_server):
    """KServe's v1 probes read `GET /` -> {"status": "alive"} and `GET /v1/models/NAME` -> {"ready": ...}."""
    from kserve import InferenceRESTClient, RESTConfig

    root = httpx.get(_base(fcn_server) + "/")
    if root.status_code != 200 or "status" not in root.json():
        # The server side of the probes lands with the server-hardening branch (i12a); once it is
        # merged this check passes through and the assertions below run.
        pytest.xfail(
            f"ee-model serve does not answer KServe's liveness probe yet (GET / -> {root.text[:80]})"
        )

    async def go():
        async with InferenceRESTClient(RESTConfig(protocol="v1", timeout=30)) as client:
            live = await client.is_server_live(_base(fcn_server))
            ready = await client.is_model_ready(_base(fcn_server), "fcn")
            with pytest.raises(httpx.HTTPStatusError, match="404"):
                await client.is_model_ready(_base(fcn_server), "no-such-model")
            return live, ready

    live, ready = _run(go())
    assert live is True
    assert ready is True


# ---- our client against KServe's ModelServer ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_ee_prepare(source: Path, dest: Path, inputs: dict, outputs: dict) -> None:
    """The real `earthengine model prepare` (it switches TensorFlow to graph mode: a subprocess)."""
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
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ready to be hosted" in done.stdout, done.stderr[-2000:]


@contextlib.contextmanager
def kserve_model_server(saved_model: Path, name: str, log_path: Path):
    """KServe's ModelServer serving `saved_model` as `name` on 127.0.0.1; yields the model URL."""
    port = _free_port()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(saved_model), name, str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        url = f"http://127.0.0.1:{port}/v1/models/{name}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                try:
                    if httpx.get(url, timeout=2).json().get("ready"):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                assert time.monotonic() < deadline, "KServe did not become ready in 120 s"
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


@pytest.fixture(scope="module")
def exported_fcn(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("kserve")
    keras.saving.load_model(demo.model_path("fcn")).export(str(d / "exported"), verbose=False)
    return d


@pytest.fixture(scope="module")
def kserve_fcn(exported_fcn):
    """The demo fcn, prepared by the real EE CLI, served by KServe's ModelServer."""
    d = exported_fcn
    _run_ee_prepare(
        d / "exported",
        d / "eeified",
        {"serving_default_red:0": "red", "serving_default_nir:0": "nir"},
        {"StatefulPartitionedCall_1:0": "ndvi_smooth"},
    )
    with kserve_model_server(d / "eeified", "fcn", d / "kserve-eeified.log") as url:
        yield url


def test_kserve_serves_no_metadata(kserve_fcn):
    # what makes the client fall back to Earth Engine's request (and what broke it before)
    assert httpx.get(kserve_fcn + "/metadata").status_code == 404


def test_from_vertex_ai_against_kserve_equals_the_local_model(kserve_fcn):
    scene = demo.scene().select(["red", "nir"])  # as in Earth Engine: send the bands the model takes
    local = demo.model("fcn").predict_image(scene).to_numpy()
    model = Model.from_vertex_ai(kserve_fcn, **demo.MODEL_PARAMS["fcn"])  # no input_names
    assert model.inputs is None
    remote = model.predict_image(scene, cache=None).to_numpy()
    np.testing.assert_array_equal(np.ma.getmaskarray(remote), np.ma.getmaskarray(local))
    assert remote.count() > 0.9 * remote.size
    assert float(np.max(np.abs(remote.filled(0) - local.filled(0)))) < 1e-5


def test_kserve_refuses_bands_the_model_does_not_take(kserve_fcn):
    """Earth Engine sends every band of the image; like TF Serving, the server refuses names the
    model does not have, and the error reaches the user with the server's text."""
    from ee_model_widgets.errors import EEModelWidgetsError

    model = Model.from_vertex_ai(kserve_fcn, max_retries=0, **demo.MODEL_PARAMS["fcn"])
    with pytest.raises(EEModelWidgetsError, match=r"HTTP 400.*no named input 'blue'"):
        model.predict_image(demo.scene(), cache=None).to_numpy()


def test_raw_json_against_kserve_serving_the_plain_model(exported_fcn):
    """RAW_JSON sends JSON numbers, which the plain (unprepared) SavedModel behind KServe takes
    as float32 tensors: no help from our server."""
    scene = demo.scene().select(["red", "nir"])
    local = demo.model("fcn").predict_image(scene).to_numpy()
    with kserve_model_server(exported_fcn / "exported", "plain", exported_fcn / "kserve-plain.log") as url:
        model = Model.from_vertex_ai(url, payload_format="RAW_JSON", **demo.MODEL_PARAMS["fcn"])
        remote = model.predict_image(scene, cache=None).to_numpy()
    np.testing.assert_array_equal(np.ma.getmaskarray(remote), np.ma.getmaskarray(local))
    assert float(np.max(np.abs(remote.filled(0) - local.filled(0)))) < 1e-5
