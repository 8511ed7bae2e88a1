"""The predictor core: projections, images, tiling, models, predictions, visualisation.

Nothing here imports ipywidgets, ipyleaflet or the web stack: the widgets, the server and
the CLI all sit on top of this package.
"""

# `Image` (core/image.py) is completed by the modules above it: its band math and its
# constructors and outputs are added by `@extends(Image)` as these modules load. Python runs
# this file before any module of the package, so every `Image` has them.
from . import band_math, image_io  # noqa: F401
