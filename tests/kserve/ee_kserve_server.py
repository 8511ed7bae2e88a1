"""A KServe `ModelServer` (protocol v1) serving a SavedModel the way TF Serving's row format does:
`python ee_kserve_server.py SAVED_MODEL_DIR NAME PORT`.

The HTTP server, routing, probes and JSON handling are KServe's own; the `kserve.Model` below is
the adapter any KServe user writes for a TensorFlow SavedModel (plain TensorFlow, nothing of
ee_model_widgets): each instance is a dict input name -> value, an unknown input name is refused
with a 400 as TF Serving refuses it, and a single-output model answers bare values.
KServe binds 0.0.0.0 unconditionally; the test machine's policy is loopback only, so the uvicorn
config KServe builds is pinned to 127.0.0.1.
"""

from __future__ import annotations

import sys

import kserve
import kserve.protocol.rest.server as kserve_rest
import numpy as np
import tensorflow as tf
from kserve.errors import InvalidInput

_Config = kserve_rest.uvicorn.Config


class _LoopbackConfig(_Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


kserve_rest.uvicorn.Config = _LoopbackConfig


class SavedModelPredictor(kserve.Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.fn = tf.saved_model.load(self.path).signatures["serving_default"]
        self.inputs = self.fn.structured_input_signature[1]
        self.ready = True
        return self.ready

    def predict(self, payload: dict, headers: dict | None = None) -> dict:
        instances = payload.get("instances")
        if not isinstance(instances, list) or not instances:
            raise InvalidInput("expected a non-empty 'instances' list")
        for i, inst in enumerate(instances):
            unknown = sorted(set(inst) - set(self.inputs))
            if unknown:
                raise InvalidInput(f"instance {i}: no named input {unknown[0]!r} in {sorted(self.inputs)}")
        feeds = {}
        for name, spec in self.inputs.items():
            values = [inst[name] for inst in instances]
            feeds[name] = tf.constant(values, dtype=spec.dtype)
        out = {k: v.numpy() for k, v in self.fn(**feeds).items()}

        def value(a):
            return a.decode() if isinstance(a, bytes) else np.asarray(a).tolist()

        if len(out) == 1:
            (only,) = out.values()
            return {"predictions": [value(v) for v in only]}
        return {"predictions": [{k: value(v[i]) for k, v in out.items()} for i in range(len(instances))]}


if __name__ == "__main__":
    path, name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    model = SavedModelPredictor(name, path)
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([model])
