"""The embedded demo: a real Sentinel-2 scene, four small demo models, synthetic scenes.

Everything here works offline (workshops, `make demo`, the tests):

    from ee_model_widgets import demo
    img = demo.scene()                        # 300 x 200 px, 10 m, EPSG:32719, 6 bands
    pred = demo.model("fcn").predict_image(img)
    big = demo.synthetic_scene(8192, 8192)    # lazy, any size

The scene: Sentinel-2 reflectance x 10000 over arid hills in Santa Cruz, Argentina
(47.85 S, 67.64 W), bands blue, green, red, nir (10 m) and swir1, swir2 (20 m resampled to
10 m); built from the `xarray-spatial==0.5.3` wheel by scripts/build_demo_scene.py.
Contains modified Copernicus Sentinel data (see DATA_LICENSE.md). The models are built and
trained by scripts/train_demo_models.py. Their inputs are named after bands (Earth Engine's
one-input-per-band convention), so they pick their bands from any image by name.

Importing this module does not import TensorFlow; `model()` does.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .synthetic import SYNTHETIC_BANDS, SyntheticImage, synthetic_geotiff, synthetic_scene

if TYPE_CHECKING:
    from ..core.image import Image
    from ..core.model import Model

__all__ = [
    "LANDCOVER_CLASSES",
    "MODELS",
    "MODEL_PARAMS",
    "SCENE_BANDS",
    "SYNTHETIC_BANDS",
    "SyntheticImage",
    "VIS_PARAMS",
    "model",
    "model_path",
    "scene",
    "scene_path",
    "synthetic_geotiff",
    "synthetic_scene",
]

_HERE = Path(__file__).resolve().parent
_SCENE_FILE = _HERE / "data" / "sentinel2_patagonia.tif"
_MODELS_DIR = _HERE / "models"

#: Band names of `scene()`, in file order (Sentinel-2 B2, B3, B4, B8, B11, B12).
SCENE_BANDS = ["blue", "green", "red", "nir", "swir1", "swir2"]

#: Class names of the "landcover" model's output bands landcover_0..landcover_3, in order.
#: Labels were made on the scene from spectral indices (see scripts/train_demo_models.py):
#: shadow = mean reflectance < 0.135, bright = mean reflectance > 0.175, vegetation =
#: NDVI > 0.11 (wins over the others), bare = everything else.
LANDCOVER_CLASSES = ["shadow", "bare", "bright", "vegetation"]

#: name -> one-line description of each demo model.
MODELS: dict[str, str] = {
    "landcover": (
        "Per-pixel land-cover classifier (1x1 convolutions) on blue, green, red, nir, swir1, swir2: "
        "probabilities of shadow / bare / bright / vegetation as bands landcover_0..landcover_3."
    ),
    "fcn": (
        "Fully-convolutional net (three 3x3 convolutions, receptive field 7x7) on red, nir predicting a "
        "smoothed NDVI (band ndvi_smooth); tiles of 128 px with 8 px overlap per edge."
    ),
    "downscale": (
        "NDVI averaged over 2x2 pixels (band ndvi_20m): 256 px input tiles -> 128 px output tiles, "
        "so the output pixel is twice the input pixel."
    ),
    "ndvi": "Analytic NDVI (nir - red) / (nir + red) from bands red, nir (band ndvi), exact to float32.",
}

#: name -> the Earth Engine parameters `model(name)` passes to `Model.from_keras`.
MODEL_PARAMS: dict[str, dict[str, Any]] = {
    "landcover": {
        "input_tile_size": [256, 256],
        "output_bands": {"landcover": {"type": "float", "dimensions": 1}},
    },
    "fcn": {
        "input_tile_size": [128, 128],
        "input_overlap_size": [8, 8],
        "output_bands": {"ndvi_smooth": {"type": "float"}},
    },
    "downscale": {
        "input_tile_size": [256, 256],
        "output_tile_size": [128, 128],
        "output_bands": {"ndvi_20m": {"type": "float"}},
    },
    "ndvi": {
        "input_tile_size": [256, 256],
        "output_bands": {"ndvi": {"type": "float"}},
    },
}

#: Suggested Earth Engine-style vis_params for the scene and each model's output.
#: "landcover" colours the class index (argmax over landcover_0..3, in LANDCOVER_CLASSES
#: order); "landcover_probability" shows one class's probability band.
VIS_PARAMS: dict[str, dict[str, Any]] = {
    "scene": {"bands": ["red", "green", "blue"], "min": 600, "max": 2600, "gamma": 1.2},
    "scene_false_color": {"bands": ["nir", "red", "green"], "min": 600, "max": 3000},
    "landcover": {"categorical": True, "min": 0, "palette": ["3b3b5c", "b48c64", "f0e6c8", "28a028"]},
    "landcover_probability": {"bands": ["landcover_3"], "min": 0, "max": 1, "palette": "viridis"},
    "fcn": {"min": 0.0, "max": 0.25, "palette": "YlGn"},
    "downscale": {"min": 0.0, "max": 0.25, "palette": "YlGn"},
    "ndvi": {"min": 0.0, "max": 0.25, "palette": "YlGn"},
}


def scene_path() -> str:
    """Path of the embedded Sentinel-2 GeoTIFF (uint16 reflectance x 10000, 6 bands)."""
    return str(_SCENE_FILE)


def scene() -> Image:
    """The embedded Sentinel-2 scene as a lazy `Image` (bands `SCENE_BANDS`, EPSG:32719, 10 m)."""
    from ..core.image import Image

    return Image.open(scene_path())


def _check_name(name: str) -> str:
    if name not in MODELS:
        raise InputError(f"Unknown demo model {name!r}: the demo models are {sorted(MODELS)}.")
    return name


def model_path(name: str) -> str:
    """Path of demo model `name`'s `.keras` file (loads with `keras.models.load_model`)."""
    return str(_MODELS_DIR / f"{_check_name(name)}.keras")


def model(name: str, **ee_overrides: Any) -> Model:
    """Demo model `name` as a `Model`, with its Earth Engine parameters (`MODEL_PARAMS`).

    Keyword arguments override those parameters, e.g. `model("fcn", input_overlap_size=[0, 0])`
    to see tile seams.
    """
    from ..core.model import Model

    params = copy.deepcopy(MODEL_PARAMS[_check_name(name)])
    # camelCase overrides (inputOverlapSize=...) replace our snake_case defaults; one spelling each.
    overrides: dict[str, Any] = {}
    for k, v in ee_overrides.items():
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower()
        if snake in overrides:
            raise InputError(
                f"Parameter given twice: {snake!r} and {k!r} mean the same thing; keep only one."
            )
        overrides[snake] = v
    params.update(overrides)
    return Model.from_keras(model_path(name), **params)
