"""Wire formats, the REST predictor client, `model prepare` and the local predict server.

    from ee_model_widgets import serving
    serving.prepare_model("exported/", "prepared/", "array", "output_0")   # ee-model prepare
    with serving.serve("prepared/", name="fcn") as server:                  # ee-model serve
        model = emw.Model.from_vertex_ai(server.url, input_tile_size=[128, 128], ...)

Modules: `codec` (TensorProto <-> web-safe base64), `client` (REST predictor behind
`Model.from_vertex_ai`), `prepare` (EE-ready SavedModels), `server` + `protocol` + `batcher`
(the TF-Serving-compatible local server), `servable` (models as typed signatures).
Nothing heavy is imported until used.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "serve": "ee_model_widgets.serving.server",
    "ServerHandle": "ee_model_widgets.serving.server",
    "prepare_model": "ee_model_widgets.serving.prepare",
    "RestPredictor": "ee_model_widgets.serving.client",
    "from_vertex_ai": "ee_model_widgets.serving.rest_models",
    "from_ai_platform_predictor": "ee_model_widgets.serving.rest_models",
    "load_servable": "ee_model_widgets.serving.servable",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ee_model_widgets.serving' has no attribute {name!r}")
