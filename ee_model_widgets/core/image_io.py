"""The ways into and out of an `Image`: `open`, `from_array`, `from_xarray`, `export`, `to_xarray`.

They build `Image`'s subclasses (files, arrays, DataArrays) and use the export and xarray
machinery, all of which sit above core/image.py; `@extends(Image)` adds them to `Image`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from .export import export_geotiff
from .image import Image, extends
from .lazy import to_xarray as lazy_xarray
from .raster import ArrayImage, FileImage
from .xarray_image import image_from_xarray


@extends(Image)
class ImageIO:
    """`Image`'s constructors and outputs (see the module docstring)."""

    # ---- constructors ----------------------------------------------------------------------
    @classmethod
    def open(
        cls, path: str | os.PathLike, band_names: Sequence[str] | None = None, categorical=None
    ) -> Image:
        """A GeoTIFF/COG (anything GDAL reads) as a lazy image; reads are windowed.

        Band names come from the file's band descriptions, else "B1".."Bn". `categorical`
        is a list of band names (or True for all) read with nearest resampling by default;
        bands with a colour table are categorical anyway.
        """
        return FileImage(path, band_names=band_names, categorical=categorical)

    @classmethod
    def from_array(
        cls,
        arr,
        transform,
        crs,
        band_names: Sequence[str] | None = None,
        nodata: float | None = None,
        categorical=None,
    ) -> Image:
        """An in-memory (bands, rows, cols) or (rows, cols) array, rasterio order.

        Masked-array masks are kept; pixels equal to `nodata` and NaN pixels are masked.
        """
        return ArrayImage(
            arr, transform=transform, crs=crs, band_names=band_names, nodata=nodata, categorical=categorical
        )

    @classmethod
    def from_xarray(cls, da, band_names: Sequence[str] | None = None, categorical=None) -> Image:
        """A rioxarray-style DataArray ("band"/"y"/"x" dims with a CRS) as an image."""
        return image_from_xarray(da, band_names=band_names, categorical=categorical)

    # ---- outputs ---------------------------------------------------------------------------
    def export(self, path: str | os.PathLike, region=None, proj=None, **kwargs) -> str:
        """Write a float32 Cloud-Optimized GeoTIFF chunk by chunk, locally or on a dask cluster
        (`client=`); see `export_geotiff`."""
        return export_geotiff(self, path, region=region, proj=proj, **kwargs)

    def to_xarray(self, region=None, proj=None, chunks=None, resampling=None):
        """A lazy dask-backed `xarray.DataArray` (band, y, x) of `region` on `proj`'s lattice.

        Computing a chunk reads only that window (a prediction: its model cells, in one batch);
        chunks default to whole model cells. Needs `pip install 'ee_model_widgets[cluster]'`.
        """
        return lazy_xarray(self, region=region, proj=proj, chunks=chunks, resampling=resampling)
