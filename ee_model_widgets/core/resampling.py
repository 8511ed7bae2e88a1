"""Resampling by name or `rasterio.enums.Resampling`, and the default (`Image.read`'s rule).

The default is nearest neighbour, as in Earth Engine ("Earth Engine performs nearest neighbor
resampling by default during reprojection"); `Image.resample("bilinear")` opts an image in to
interpolation, like EE's `ee.Image.resample`. A model run on the map's grid
(`fix_input_proj=False`) therefore sees the same inputs here as in Earth Engine.
"""

from __future__ import annotations

from rasterio.enums import Resampling

from ..errors import InputError

# Resamplings GDAL's warper applies (gauss is for overviews only and refused by warps).
_WARPABLE = tuple(r for r in Resampling if r.value < 8 and r is not Resampling.gauss)


def resolve_resampling(resampling) -> Resampling:
    """None -> nearest (Earth Engine's default); names -> Resampling."""
    if resampling is None:
        return Resampling.nearest
    if isinstance(resampling, Resampling) and resampling in _WARPABLE:
        return resampling
    if isinstance(resampling, str):
        try:
            r = Resampling[resampling.strip().lower()]
        except KeyError:
            r = None
        if r in _WARPABLE:
            return r
    choices = ", ".join(r.name for r in _WARPABLE)
    raise InputError(f"Unknown resampling {resampling!r}: use one of {choices} (or a rasterio Resampling).")
