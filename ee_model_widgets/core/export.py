"""Streamed GeoTIFF export: any `Image`, window by window, with bounded memory.

The output is a tiled (256x256), compressed float32 GeoTIFF whose band descriptions are the
band names. Masked pixels are written as NaN and the file's nodata is NaN, so every GIS tool
(and `Image.open`) reads them back as no data, with a separate mask per band. The target is
checked before any pixel is computed (a folder, a missing or read-only folder, too little
free space for an uncompressed file: `ExportError`), the file is written to a hidden
temporary beside it and renamed at the end (`output_file.py`), so a failed or interrupted
export never leaves a half-written file at `path`, and the file gets the permissions of any
new file (the umask).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..errors import EEModelWidgetsError, ExportError, InputError
from .output_file import check_target, describe_os_error, output_file
from .region import grid_for

if TYPE_CHECKING:
    from .image import Image

_BLOCK = 256  # internal TIFF tile size, the COG convention


def export_geotiff(
    image: Image,
    path: str | os.PathLike,
    region=None,
    proj=None,
    block_size: int = 512,
    compress: str = "deflate",
    progress: bool = True,
    resampling=None,
    overviews: bool = False,
) -> str:
    """Write `image` over `region` on `proj`'s lattice to a GeoTIFF at `path`; returns the path.

    Reads `block_size` x `block_size` windows one at a time (memory stays bounded whatever
    the image size). `overviews=True` also builds internal averaged overviews for fast
    zoomed-out display. A target that cannot be written raises `ExportError` before any
    pixel is read; a failure later leaves `path` as it was.
    """
    from tqdm.auto import tqdm

    path = os.fspath(path)
    if not isinstance(block_size, int) or block_size < _BLOCK or block_size % _BLOCK:
        raise InputError(f"block_size must be a positive multiple of {_BLOCK}, got {block_size!r}.")
    grid = grid_for(image, region, proj)
    bands = image.band_names
    compressed = bool(compress) and str(compress).lower() != "none"
    # Only an uncompressed file's size is known before the work (float32, + 1/3 for overviews).
    size = None if compressed else grid.width * grid.height * len(bands) * 4 * (4 if overviews else 3) // 3
    check_target(path, size)

    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": len(bands),
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    if compressed:
        profile["compress"] = compress
        if str(compress).lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3  # floating-point predictor: much smaller float32 files

    windows = [
        (col, row, min(block_size, grid.width - col), min(block_size, grid.height - row))
        for row in range(0, grid.height, block_size)
        for col in range(0, grid.width, block_size)
    ]
    bar = tqdm(
        total=len(windows),
        disable=not progress,
        desc=f"export {os.path.basename(path)}",
        unit="window",
    )
    try:
        with output_file(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(bands):
                dst.set_band_description(i + 1, name)
            for col, row, w, h in windows:
                block = image.read(grid.window(col, row, w, h), resampling=resampling)
                dst.write(block.filled(np.nan).astype(np.float32, copy=False), window=Window(col, row, w, h))
                bar.update(1)
            if overviews:
                factors = [2**k for k in range(1, 1 + int(math.log2(max(grid.width, grid.height) / _BLOCK)))]
                if factors:
                    dst.build_overviews(factors, Resampling.average)
    except BaseException as exc:
        if isinstance(exc, (EEModelWidgetsError, KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        reason = describe_os_error(exc, os.path.dirname(os.path.abspath(path)))
        raise ExportError(f"Export to {path} failed and nothing was written: {reason}") from exc
    finally:
        bar.close()
    return path
