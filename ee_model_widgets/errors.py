"""The project's error hierarchy: every error we raise on purpose derives from one base.

Each message names what is wrong and how to fix it, so a user in a notebook can act on it
without reading our source.
"""

from __future__ import annotations


class EEModelWidgetsError(Exception):
    """Base class of every error raised on purpose by ee_model_widgets."""


class InputError(EEModelWidgetsError, ValueError):
    """A bad argument: unknown band, wrong shape or dtype, an invalid parameter value."""


class ProjectionError(InputError):
    """An unknown CRS, or a grid/projection that cannot be used."""


class RegionError(InputError):
    """A region that is empty, malformed or outside the image."""


class TooManyCells(InputError):
    """A read that would need more model cells than its budget allows (e.g. a zoomed-out map
    tile of a fixInputProj model). The map layer draws it as a "zoom in" tile."""

    def __init__(self, message: str, cells: int, limit: int):
        super().__init__(message)
        self.cells = cells
        self.limit = limit


class ImageReadError(EEModelWidgetsError, OSError):
    """An image file that is missing, corrupt or unreadable."""


class ModelError(EEModelWidgetsError):
    """A model that cannot be loaded, or that raised or returned something unusable."""


class ServingError(ModelError):
    """A REST endpoint that is down, slow, refuses the request or answers garbage."""


class ExportError(EEModelWidgetsError):
    """An export that could not be written."""


class TFRecordError(EEModelWidgetsError):
    """A TFRecord shard or mixer file that is missing, corrupt or inconsistent."""
