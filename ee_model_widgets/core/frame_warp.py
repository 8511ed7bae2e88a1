"""Frame warps: one GDAL warp set-up per fixed frame of a target lattice, not per block.

A raster image read on a foreign lattice (`core/raster.py`) used to warp each fixed
`BLOCK` x `BLOCK` block on its own: a source cut, a MEM dataset, a `WarpedVRT` (GDAL
transformer + PROJ pipeline) and a footprint `transform_bounds` per 256 px block, ~1.3 ms of
set-up each, and whole 256 px blocks for the 8 px overlap ring of the model's cells (the
24-tile viewport of `benchmarks/prediction_layer.py` (a) warped 48 blocks, 2x the pixels it
needed). Here the lattice is cut into larger fixed *frames* (`frame_size` pixels square,
anchored at the CRS origin like the blocks, so a frame is a whole number of blocks and of
web tiles), and each frame gets one `WarpedVRT` over the source pixels under it (read once
and cached by the caller).

Window independence is kept by GDAL itself: a `WarpedVRT` computes its pixels in fixed
blocks of its own (512 x 128: `VRTWarpedDataset::ProcessBlock`, one warp with its own
source window and approximate transformer per block), and with
`GDAL_VRT_WARP_USE_DATASET_RASTERIO=NO` every read goes through those blocks (GDAL >= 3.8
otherwise warps a read larger than a block as one chunk, whose result depends on the read's
extent; `tests/unit/test_frame_warp.py` fails without the option). The frame, its source
cut, its mask sets and GDAL's blocks depend only on (image, level, target lattice, frame),
so any window of a frame reads exactly like the whole frame. GDAL's blocks are also the
unit the caller caches (`frame_block_shape`): 128 rows pay for the ring instead of 256.

Masks: NaN is the source's nodata and the output is initialised to NaN, with *no*
destination nodata. GDAL then takes its plain kernels on a block whose source window has
no masked pixel and its nodata-aware ones elsewhere: on data with holes, off-source pixels
and each resampling this gave the same values, bit for bit, as the masked path with a
NaN destination nodata, and on valid data the same as the plain path; the destination
nodata made GDAL track destination validity, which doubled the cost of every warp (116 vs
252 ms for a 2048² 2-band bilinear warp). Bands are warped in sets that share one mask
over the frame's source (see `warp._warp_bands` for why).

Measured (thread CPU on a loaded 2-core machine, the 7 reads of that viewport, cold):
per-block 150-190 ms, frames 105-130 ms. Left alone, by measurement: smaller GDAL blocks
(256 x 128 warps the viewport's pixels ~30% faster) need a VRT XML round trip that costs
~3.7 ms per frame and thread, which eats the gain; keeping a frame's VRT open across reads
would save ~1 ms per frame read but needs one per thread (GDAL datasets are not
thread-safe) and care that the source array outlives it.
"""

from __future__ import annotations

import math

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .grid import Grid
from .warp import BLOCK, TOLERANCE, _mem_dataset

#: Frames are sized so that their source footprint is about this many source pixels wide
#: (bounded memory for the cached source cut, whatever the zoom) ...
FRAME_SOURCE_PIXELS = 512
#: ... and at most this many target pixels wide (a 4096 px frame holds 16 x 16 web tiles).
MAX_FRAME = 4096
# CPLStrtod's spelling of NaN: rasterio upper-cases warp option values, and GDAL reads
# "NAN" as 0 but "1.#QNAN" as NaN.
_NAN_INIT = "1.#QNAN"


def frame_size(scales: tuple[float, float] | None) -> int:
    """Side (target pixels, a power-of-two multiple of BLOCK) of the frames of a lattice on
    which one target pixel spans `scales` source pixels."""
    if scales is None:
        return BLOCK
    n = FRAME_SOURCE_PIXELS / (BLOCK * max(max(scales), 1e-9))
    k = int(math.floor(math.log2(n))) if n >= 1 else 0
    return min(BLOCK * 2**k, MAX_FRAME)


def frame_block_shape(size: int) -> tuple[int, int]:
    """(width, height) of the blocks GDAL warps a `size` x `size` frame in (GDAL's default
    for a `WarpedVRT`: 512 x 128, at most the frame), which are also the units cached."""
    return min(size, 512), min(size, 128)


def frame_grid(crs: CRS, t0: Affine, size: int, fx: int, fy: int) -> Grid:
    """Frame (fx, fy) of the canonical lattice `t0` (see `warp._frame`)."""
    return Grid(crs, t0 @ Affine.translation(fx * size, fy * size), size, size)


def mask_sets(src: np.ndarray) -> list[list[int]]:
    """Bands of float32 `src` grouped by identical NaN masks, in band order."""
    nan = np.isnan(src)
    sets: list[list[int]] = []
    for i in range(src.shape[0]):
        for s in sets:
            if np.array_equal(nan[s[0]], nan[i]):
                s.append(i)
                break
        else:
            sets.append([i])
    return sets


def warp_frame_window(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    frame: Grid,
    window: tuple[int, int, int, int],
    resampling: Resampling,
    scales: tuple[float, float] | None,
) -> np.ndarray:
    """Pixels (col, row, width, height) `window` of `frame` warped from float32 `src` (bands,
    rows, cols; NaN = masked): float32 (bands, height, width), NaN where masked or off `src`.

    `src` must be the source under the whole frame (a function of the frame alone), so the
    result does not depend on `window` (see the module docstring).
    """
    c, r, w, h = window
    extras = {"UNIFIED_SRC_NODATA": "YES", "INIT_DEST": _NAN_INIT}
    if scales is not None:
        # Fix the downsampling kernel's width instead of letting GDAL estimate it per block.
        extras["XSCALE"] = repr(1.0 / scales[0])
        extras["YSCALE"] = repr(1.0 / scales[1])
    sets = mask_sets(src)
    out = np.empty((src.shape[0], h, w), np.float32)
    for s in sets:
        part = src if len(sets) == 1 else np.ascontiguousarray(src[s])
        with (
            _mem_dataset(part, src_transform) as ds,
            WarpedVRT(
                ds,
                src_crs=src_crs,
                src_transform=src_transform,
                crs=frame.crs,
                transform=frame.transform,
                width=frame.width,
                height=frame.height,
                resampling=resampling,
                tolerance=TOLERANCE,
                src_nodata=np.nan,
                nodata=None,
                init_dest_nodata=False,
                dtype="float32",
                **extras,
            ) as vrt,
            rasterio.Env(GDAL_VRT_WARP_USE_DATASET_RASTERIO="NO"),
        ):
            out[s] = vrt.read(window=Window(c, r, w, h))
    return out
