"""The predict server's request policies as pure functions: declared-shape limits, error texts
for clients, allowed Host names and the Host/Origin/Content-Type decisions."""

from __future__ import annotations

import numpy as np
import pytest

from ee_model_widgets.errors import InputError
from ee_model_widgets.serving import codec, protocol
from ee_model_widgets.serving.browser_safety import BrowserSafety, allowed_host_names
from ee_model_widgets.serving.servable import Signature, TensorInfo


def proto_bytes(shape, content: bytes = b"", dtype: int = 1) -> bytes:
    from tensorflow.core.framework import tensor_pb2

    p = tensor_pb2.TensorProto(dtype=dtype, tensor_content=content)
    for n in shape:
        p.tensor_shape.dim.add(size=n)
    return p.SerializeToString()


def test_declared_shape_is_refused_before_allocating():
    with pytest.raises(codec.TensorTooLarge, match=r"\(9000, 9000, 1\) has 81000000 elements"):
        codec.parse_tensor(proto_bytes((9000, 9000, 1)), max_elements=1000)
    # dimensions whose int64 product overflows to a small number are still refused
    with pytest.raises(codec.TensorTooLarge):
        codec.parse_tensor(proto_bytes((2**32, 2**32, 1)), max_elements=10**9)
    with pytest.raises(InputError, match="needs 64"):  # content disagreeing with the shape
        codec.declared_shape(codec.parse_tensor_proto(proto_bytes((4, 4), b"\0" * 8)))
    arr = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    assert codec.declared_shape(codec.parse_tensor_proto(codec.serialize_tensor(arr)), 12) == (3, 4, 1)
    np.testing.assert_array_equal(codec.parse_tensor(codec.serialize_tensor(arr), max_elements=12), arr)
    # TensorFlow's splat (no values -> zeros) stays allowed under the limit
    np.testing.assert_array_equal(codec.parse_tensor(proto_bytes((2, 3))), np.zeros((2, 3), np.float32))


def _sig(ee_wire: bool) -> Signature:
    dtype = np.dtype(object) if ee_wire else np.dtype(np.float32)
    shape = (None,) if ee_wire else (None, None, None, 1)
    info = TensorInfo("red", dtype, shape)
    return Signature("serving_default", {"red": info}, {"out": info}, lambda f: f, ee_wire=ee_wire)


@pytest.mark.parametrize("ee_wire", [False, True])
def test_request_limits_count_declared_elements(ee_wire):
    sig = _sig(ee_wire)
    small = codec.encode_tensor(np.zeros((8, 8, 1), np.float32))
    limits = protocol.Limits(max_instances=10, max_instance_elements=100, max_request_elements=200)
    req = protocol.parse_predict({"instances": [{"red": small}] * 3}, sig, limits=limits)
    assert req.batch_size == 3 and limits.used == 192
    big = codec.encode_base64(proto_bytes((9000, 9000, 1)))
    with pytest.raises(codec.TensorTooLarge, match="Input 'red'.*81000000 elements"):
        protocol.parse_predict(
            {"instances": [{"red": big}]}, sig, limits=protocol.Limits(max_instance_elements=100)
        )
    with pytest.raises(codec.TensorTooLarge, match="more than 200 tensor elements in all"):
        protocol.parse_predict(
            {"instances": [{"red": small}] * 4}, sig, limits=protocol.Limits(max_request_elements=200)
        )
    with pytest.raises(InputError, match="at most 3"):
        protocol.parse_predict(
            {"instances": [{"red": small}] * 4}, sig, limits=protocol.Limits(max_instances=3)
        )


def test_element_pool_bounds_requests_in_flight_together():
    from ee_model_widgets.serving.batcher import ServerBusy

    sig = _sig(False)
    small = codec.encode_tensor(np.zeros((8, 8, 1), np.float32))
    pool = protocol.ElementPool(300)
    first = protocol.Limits(pool=pool)
    protocol.parse_predict({"instances": [{"red": small}] * 4}, sig, limits=first)
    assert pool.used == 256
    with pytest.raises(ServerBusy, match="retry"):
        protocol.parse_predict({"instances": [{"red": small}]}, sig, limits=protocol.Limits(pool=pool))
    first.release()
    assert pool.used == 0
    protocol.parse_predict({"instances": [{"red": small}]}, sig, limits=protocol.Limits(pool=pool))


@pytest.mark.parametrize("ee_wire", [False, True])
def test_degenerate_requests_are_input_errors_not_crashes(ee_wire):
    """Each of these was a 500 "Internal error (ValueError/IndexError)" from numpy."""
    sig = _sig(ee_wire)
    limits = protocol.Limits(max_instance_elements=4 * 1024 * 1024)
    with pytest.raises(InputError, match="'red' has no instances"):
        protocol.parse_predict({"inputs": {"red": []}}, sig, limits=limits)
    with pytest.raises(InputError, match="'red' has no instances"):
        protocol.parse_predict({"inputs": []}, sig, limits=limits)
    # an empty tensor declaring dimensions no array can have
    empty_huge = codec.encode_base64(proto_bytes((0, 2**62, 2**62)))
    with pytest.raises(codec.TensorTooLarge, match="is empty but declares"):
        protocol.parse_predict({"instances": [empty_huge]}, sig, limits=limits)
    # more dimensions than numpy has room for once instances are stacked
    for rank in (64, 65, 100):
        deep = codec.encode_base64(proto_bytes((1,) * rank))
        with pytest.raises(InputError, match=f"has {rank} dimensions; at most 32"):
            protocol.parse_predict({"instances": [deep]}, sig, limits=limits)
    # the readers refuse them too, with or without a limit
    with pytest.raises(InputError, match="is empty but declares"):
        codec.parse_tensor(proto_bytes((0, 2**62, 2**62)))
    np.testing.assert_array_equal(codec.parse_tensor(proto_bytes((0, 256, 3))), np.zeros((0, 256, 3)))
    assert codec.parse_tensor(proto_bytes((1,) * 32)).shape == (1,) * 32


def test_deep_json_is_an_input_error():
    with pytest.raises(InputError, match="nested too deeply"):
        protocol.parse_body(b"[" * 100_000 + b"]" * 100_000)


def test_public_message_drops_paths_and_graph_dumps():
    tf_text = (
        "The model rejected the inputs: Graph execution error:\n\nDetected at node StatefulPartitionedCall/"
        'conv/BiasAdd defined at (most recent call last):\n  File "/usr/lib/python3/x.py", line 3, in f\n'
        "input depth must be evenly divisible by filter depth: 5 vs 3\n\t [[{{node StatefulPartitionedCall/"
        "conv/BiasAdd}}]] [Op:__inference_signature_wrapper_210]"
    )
    assert protocol.public_message(tf_text) == (
        "The model rejected the inputs: Graph execution error: input depth must be evenly divisible by "
        "filter depth: 5 vs 3"
    )
    assert protocol.public_message("Cannot load /home/me/models/m.keras: bad") == "Cannot load <path>: bad"
    assert protocol.public_message("C:\\Users\\me\\m.keras is bad") == "<path> is bad"
    assert protocol.public_message("use POST /v1/models/fcn:predict") == "use POST /v1/models/fcn:predict"
    assert len(protocol.public_message("x" * 5000)) < 510


def test_allowed_host_names_follow_the_bound_address():
    names, any_ip = allowed_host_names("127.0.0.1")
    assert {"localhost", "127.0.0.1", "::1"} <= names and not any_ip
    names, any_ip = allowed_host_names("0.0.0.0", ["models.lab.example"])
    assert "models.lab.example" in names and any_ip and "0.0.0.0" not in names


def _scope(method="GET", **headers) -> dict:
    return {
        "type": "http",
        "method": method,
        "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()],
    }


def test_browser_safety_decisions():
    guard = BrowserSafety(None, bind_host="127.0.0.1")
    assert guard.refusal(_scope(host="127.0.0.1:8501")) is None
    assert guard.refusal(_scope(host="[::1]:8501")) is None
    assert guard.refusal(_scope(host="LOCALHOST.:8501")) is None
    assert guard.refusal(_scope(host="evil.example:8501"))[0] == 400
    assert guard.refusal(_scope(host="10.1.2.3:8501"))[0] == 400  # not where a loopback server listens
    assert guard.refusal(_scope(host="localhost", origin="http://evil.example"))[0] == 403
    assert guard.refusal(_scope("POST", host="localhost", content_type="text/plain"))[0] == 415
    assert (
        guard.refusal(_scope("POST", host="localhost", content_type="Application/JSON; charset=utf-8"))
        is None
    )
    assert guard.refusal(_scope("POST", host="localhost")) is None  # scripts (and KServe's client) send none
    room = BrowserSafety(None, bind_host="0.0.0.0", allow_origins=["http://localhost:8888/"])
    assert room.refusal(_scope(host="192.168.1.20:8501", origin="http://localhost:8888")) is None
    assert room.refusal(_scope(host="192.168.1.20:8501", origin="http://localhost:8889"))[0] == 403
    assert room.refusal(_scope(host="rebound.evil.example:8501"))[0] == 400
    proxied = BrowserSafety(None, bind_host="0.0.0.0", allow_hosts=["*"])
    assert proxied.refusal(_scope(host="fcn.default.svc.cluster.local")) is None


def test_a_burst_of_dropped_clients_is_counted_in_a_line_of_its_own_when_it_ends():
    import asyncio
    import logging
    import threading

    from ee_model_widgets.serving.connections import DropLog

    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    logger = logging.getLogger("test.droplog")
    logger.addHandler(Collect())
    logger.propagate = False
    drops = DropLog(logger, interval=0.2)

    async def burst():
        for i in range(50):  # one line, then 49 within the interval, then nothing
            drops.note(("127.0.0.1", i), "no complete request headers within 2 s")
        await asyncio.sleep(0.5)

    # In a thread of its own: the test session may already run an event loop in this one.
    runner = threading.Thread(target=lambda: asyncio.run(burst()))
    runner.start()
    runner.join(10)
    assert len(records) == 2, records
    assert records[0].startswith("Closed the connection of 127.0.0.1:0: no complete request headers")
    assert records[1] == "Closed the connection of 49 more dropped clients since the last message"
    assert drops.total == 50
