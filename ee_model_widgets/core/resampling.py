"""Resampling by name or `rasterio.enums.Resampling`, and each band's default (`Image.read`'s rule)."""

from __future__ import annotations

from rasterio.enums import Resampling

from ..errors import InputError

# Resamplings GDAL's warper applies (gauss is for overviews only and refused by warps).
_WARPABLE = tuple(r for r in Resampling if r.value < 8 and r is not Resampling.gauss)


def resolve_resampling(resampling, categorical: bool = False) -> Resampling:
    """None -> nearest for categorical bands, bilinear otherwise; names -> Resampling."""
    if resampling is None:
        return Resampling.nearest if categorical else Resampling.bilinear
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
