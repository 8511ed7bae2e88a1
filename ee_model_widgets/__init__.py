"""ee_model_widgets: Earth Engine's ee.Model workflow, in Jupyter, on your own machine.

    import ee_model_widgets as emw
    img = emw.Image.open("scene.tif")
    model = emw.Model.from_keras("model.keras", input_tile_size=[256, 256])
    pred = model.predict_image(img)
    emw.explore()

Public names are imported lazily so that `import ee_model_widgets` stays fast (TensorFlow
and the widget stack load only when something needs them).
"""

from __future__ import annotations

import importlib

from . import quiet_tensorflow as _quiet_tensorflow
from ._version import __version__  # noqa: E402
from .core import remote as _remote

_quiet_tensorflow.install()  # TensorFlow's C++ start-up lines stay out of notebook outputs


def _rest_constructor(name: str):
    """`Model.from_vertex_ai` & co. live in serving, above core: the root wires them in."""
    from .serving import rest_models

    return getattr(rest_models, name, None)


_remote.provide(_rest_constructor)

# public name -> module that defines it
_LAZY = {
    "Image": "ee_model_widgets.core.image",
    "Projection": "ee_model_widgets.core.projection",
    "Model": "ee_model_widgets.core.model",
    "render": "ee_model_widgets.core.vis",
    "PredictionLayer": "ee_model_widgets.widgets.prediction_layer",
    "KernelTileLayer": "ee_model_widgets.widgets.tile_layer",
    "Map": "ee_model_widgets.widgets.map",
    "explore": "ee_model_widgets.widgets.panel",
    "Labels": "ee_model_widgets.core.labels",
    "train_classifier": "ee_model_widgets.core.classifier",
    "TrainedClassifier": "ee_model_widgets.core.classifier",
    "EEModelWidgetsError": "ee_model_widgets.errors",
}
_SUBMODULES = {"core", "serving", "widgets", "demo", "tfrecord", "errors", "cli"}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'ee_model_widgets' has no attribute {name!r}")


def _jupyter_labextension_paths():
    """Where JupyterLab finds the prebuilt extension when installed in development mode."""
    return [{"src": "labextension", "dest": "ee-model-widgets"}]
