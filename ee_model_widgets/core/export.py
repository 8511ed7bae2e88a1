"""Streamed GeoTIFF export: any `Image`, window by window, with bounded memory.

The output is a Cloud-Optimized (by default), tiled (256x256), compressed float32 GeoTIFF
whose band descriptions are the band names; the chunks are computed by threads or on a
dask.distributed cluster (`core/export_tasks.py`). Masked pixels are written as NaN and the
file's nodata is NaN, so every GIS tool (and `Image.open`) reads them back as no data, with a
separate mask per band. The target is checked before any pixel is computed (a folder, a
missing or read-only folder, too little free space for the uncompressed data: `ExportError`),
the file is written to a hidden temporary beside it and renamed at the end
(`output_file.py`), so a failed or interrupted export never leaves a half-written file at
`path`, and the file gets the permissions of any new file (the umask).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ExportError, InputError

if TYPE_CHECKING:
    from .image import Image

_BLOCK = 256  # internal TIFF tile size, the COG convention


def export_geotiff(
    image: Image,
    path: str | os.PathLike,
    region=None,
    proj=None,
    block_size: int | None = None,
    compress: str = "deflate",
    progress: bool = True,
    resampling=None,
    overviews: bool = False,
    **options,
) -> str:
    """Write `image` over `region` on `proj`'s lattice to a GeoTIFF at `path`; returns the path.

    Reads `block_size` x `block_size` windows (default: whole model cells, ~1024 px; memory
    stays bounded whatever the image size). `options`: `client=` (a `distributed.Client`),
    `cog=True` (a Cloud-Optimized GeoTIFF; `cog=False` writes a plain tiled GeoTIFF, with
    `overviews=True` for internal overviews), `resume=`, `on_progress=`, `cancel=`. A target
    that cannot be written raises `ExportError` before any pixel is read; a failure later
    leaves `path` as it was.
    """
    # One export path (threads or dask.distributed, COG by default): see core/export_tasks.py.
    from .export_tasks import export_tasks

    _refuse_ee_export_names(options)
    _refuse_other_formats(path)

    return export_tasks(
        image,
        path,
        region,
        proj,
        block_size=block_size,
        compress=compress,
        progress=progress,
        resampling=resampling,
        overviews=overviews,
        **options,
    )


# Earth Engine's Export.image parameters that have another spelling here.
_EE_EXPORT_NAMES = {
    "scale": "proj=emw.Projection(crs).at_scale(scale)",
    "crs": "proj=emw.Projection(crs).at_scale(scale) (or proj='EPSG:xxxx' for the image's own pixel size)",
    "crs_transform": "proj=emw.Projection(crs, transform)",
    "crsTransform": "proj=emw.Projection(crs, transform)",
    "maxPixels": "nothing (exports are written window by window, whatever their size)",
    "max_pixels": "nothing (exports are written window by window, whatever their size)",
    "fileFormat": "nothing (exports are GeoTIFFs; TFRecords: `ee-model tfrecord export`)",
    "file_format": "nothing (exports are GeoTIFFs; TFRecords: `ee-model tfrecord export`)",
    "fileNamePrefix": "the path argument",
    "description": "the path argument",
}


def _refuse_ee_export_names(options: dict) -> None:
    """Say what to write instead of an Earth Engine Export.image keyword (not a bare TypeError)."""
    for name in options:
        if name in _EE_EXPORT_NAMES:
            raise InputError(
                f"export() has no {name!r} argument (Earth Engine's Export.image spelling): use "
                f"{_EE_EXPORT_NAMES[name]}."
            )


# Names of formats export() does not write: it writes a GeoTIFF whatever the name, and a program
# that trusts the name (an image viewer for .png) cannot open it.
_OTHER_FORMATS = {
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"), "a picture"),
    **dict.fromkeys((".jp2", ".nc", ".zarr", ".vrt", ".img", ".hdf", ".h5", ".npy"), "another raster format"),
    **dict.fromkeys((".tfrecord", ".gz"), "TFRecords: use emw.tfrecord.export_image"),
    **dict.fromkeys((".json", ".geojson", ".csv", ".kml", ".shp"), "a vector or table format"),
}


def _refuse_other_formats(path: str | os.PathLike) -> None:
    """Refuse a file name that promises another format than the GeoTIFF export() writes."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix in _OTHER_FORMATS:
        stem = os.path.splitext(os.path.basename(os.fspath(path)))[0] or "prediction"
        raise ExportError(
            f"export() writes a GeoTIFF, but {os.fspath(path)!r} ends in {suffix!r} "
            f"({_OTHER_FORMATS[suffix]}): name it .tif, e.g. '{stem}.tif'."
        )
