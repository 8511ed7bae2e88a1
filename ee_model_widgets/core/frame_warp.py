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

A frame's VRTs stay open for the next read (`MAX_OPEN_FRAMES`, LRU): opening one is ~1 ms
of GDAL/PROJ set-up, and a viewport's batches read the same few frames. GDAL datasets are
not thread-safe, so each open frame has a lock held while it is read or closed; the caller
(`core/raster.py`) also lets one thread at a time warp the missing blocks of a frame, so the
two layer workers do not warp the same blocks twice.

Measured (thread CPU of the reads, loaded 2-core machine, cold caches): the 7 reads of the
viewport above, run alone, per-block 162-188 ms -> frames 103-130 ms; inside the layer
(`benchmarks/prediction_layer.py` (a), warm-up tiles included) 256-345 ms -> 171-214 ms.
Left alone, by measurement: smaller GDAL blocks (256 x 128 warps that viewport's pixels
~30% faster than 512 x 128 in one read) need a VRT XML round trip costing ~3.7 ms per
frame opened; tried in the layer, the reads took 175-231 ms against 180-210 ms: no gain.
Nor did reading one frame from both workers at once (two open copies per frame, each block
claimed by one thread instead of the frame lock): layer 265-344 ms against 251-363 ms, the
reads 170-265 ms against 162-250 ms of CPU (the second copy's set-up, and two warps
contending for two cores that the model also needs).
"""

from __future__ import annotations

import atexit
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from .grid import Grid
from .warp import BLOCK, _mem_dataset, mask_sets, warped_vrt

#: Frames are sized so that their source footprint is about this many source pixels wide
#: (bounded memory for the cached source cut, whatever the zoom) ...
FRAME_SOURCE_PIXELS = 512
#: ... and at most this many target pixels wide (a 4096 px frame holds 16 x 16 web tiles).
MAX_FRAME = 4096


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


class _FrameVRTs:
    """The open `WarpedVRT`s of one frame (one per mask set) and the arrays GDAL reads.

    A GDAL dataset is not thread-safe: `lock` is held while it is read, and while it is closed.
    """

    def __init__(self, src, src_transform, src_crs, frame: Grid, resampling, scales, sample_grid=False):
        self.lock = threading.Lock()
        self.closed = False
        self.bands = src.shape[0]
        sets = mask_sets(src)
        self.parts: list[tuple[list[int], np.ndarray, object, WarpedVRT]] = []
        try:
            for s in sets:
                part = src if len(sets) == 1 else np.ascontiguousarray(src[s])
                ds = _mem_dataset(part, src_transform)  # reads `part` in place: kept alive below
                try:
                    vrt = warped_vrt(ds, src_transform, src_crs, frame, resampling, scales, True, sample_grid)
                except Exception:
                    ds.close()
                    raise
                self.parts.append((s, part, ds, vrt))
        except Exception:
            self.close()
            raise

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray:
        c, r, w, h = window
        out = np.empty((self.bands, h, w), np.float32)
        with rasterio.Env(GDAL_VRT_WARP_USE_DATASET_RASTERIO="NO"):
            for s, _, _, vrt in self.parts:
                out[s] = vrt.read(window=Window(c, r, w, h))
        return out

    def close(self) -> None:
        for _, _, ds, vrt in reversed(self.parts):
            vrt.close()
            ds.close()
        self.parts = []
        self.closed = True


#: Frames whose VRTs stay open between reads (a viewport's batches read the same few frames;
#: opening one costs ~1 ms of GDAL/PROJ set-up). 0 opens and closes them on every read.
MAX_OPEN_FRAMES = 16
_OPEN: OrderedDict[Hashable, _FrameVRTs] = OrderedDict()
_OPEN_LOCK = threading.Lock()


def close_frames() -> None:
    """Close every frame VRT kept open (e.g. to measure cold reads, or to free memory)."""
    with _OPEN_LOCK:
        victims = list(_OPEN.values())
        _OPEN.clear()
    for v in victims:
        with v.lock:
            v.close()


atexit.register(close_frames)  # GDAL closes them before the arrays they read are freed


def warp_frame_window(
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    frame: Grid,
    window: tuple[int, int, int, int],
    resampling: Resampling,
    scales: tuple[float, float] | None,
    key: Hashable | None = None,
    sample_grid: bool = False,
) -> np.ndarray:
    """Pixels (col, row, width, height) `window` of `frame` warped from float32 `src` (bands,
    rows, cols; NaN = masked): float32 (bands, height, width), NaN where masked or off `src`.

    `src` must be the source under the whole frame (a function of the frame alone), so the
    result does not depend on `window` (see the module docstring). With a `key` (naming
    `src`, the frame, `resampling` and `scales`) the frame's VRTs stay open for the next read.
    `sample_grid`: see `warp.warped_vrt`.
    """
    if key is None or MAX_OPEN_FRAMES <= 0:
        vrts = _FrameVRTs(src, src_transform, src_crs, frame, resampling, scales, sample_grid)
        try:
            return vrts.read(window)
        finally:
            vrts.close()
    while True:
        with _OPEN_LOCK:
            vrts = _OPEN.get(key)
            if vrts is not None:
                _OPEN.move_to_end(key)
        if vrts is None:
            fresh = _FrameVRTs(src, src_transform, src_crs, frame, resampling, scales, sample_grid)
            victims = []
            with _OPEN_LOCK:
                vrts = _OPEN.get(key)
                if vrts is None:
                    vrts = _OPEN[key] = fresh
                    while len(_OPEN) > MAX_OPEN_FRAMES:
                        victims.append(_OPEN.popitem(last=False)[1])
            if vrts is not fresh:  # another thread opened it meanwhile
                fresh.close()
            for v in victims:  # closed once no thread is reading them
                with v.lock:
                    v.close()
        with vrts.lock:
            if not vrts.closed:
                return vrts.read(window)
        # closed (evicted) between the lookup and the read: open it again
