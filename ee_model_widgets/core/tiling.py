"""The tile plan: a fixed lattice of model cells, and the pure arithmetic around it.

A *cell* is one model instance. Cells sit on a lattice anchored in a projection, so the
same cell is cut the same way whatever window is asked for; that is what makes predicted
cells reusable and cacheable, and tiling seam-free (each cell sees its overlap, which is
cropped from its result).

- Input lattice: `base` (affine, CRS) maps input pixel (col, row) to CRS coordinates. Cell
  (i, j) (column index, row index) owns input pixels `[i*tx, (i+1)*tx) x [j*ty, (j+1)*ty)`
  and the model sees that window grown by the per-edge overlap on every side (pixels beyond
  the image are masked and sent as 0).
- Output lattice: `base @ scale(tx/outx, ty/outy)`; cell (i, j) owns output pixels
  `[i*outx, (i+1)*outx) x [j*outy, (j+1)*outy)`, so `out_scale = in_scale * input_tile_size /
  output_tile_size` per axis.

Anchoring (see `lattice_for_proj` / `lattice_for_request`): with `fix_input_proj=True` the
lattice is the model's `proj` (default: the image's native grid, so cell (0, 0) starts at
the image's top-left pixel); with False it is the request grid's CRS and pixel size anchored
at the CRS origin, so all XYZ map tiles of one zoom share one lattice (and its cells).

Everything here is pure (no I/O, no models) and unit-tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from .grid import Grid, as_crs, crs_key

# How close (in pixels) a coordinate must be to an integer to count as aligned.
ALIGN_TOL = 1e-6


def _snap(v: float) -> float:
    """Round float noise away (e.g. 9.99999999999998 -> 10.0) so equal lattices compare equal."""
    if v == 0:
        return 0.0
    return float(f"{v:.14g}")


@dataclass(frozen=True)
class Lattice:
    """A cell lattice: input pixel lattice (`crs`, `base`), cell size, overlap, output cell size.

    Sizes are (x, y). `overlap` is per edge, in input pixels.
    """

    crs: CRS
    base: Affine
    tile: tuple[int, int]
    overlap: tuple[int, int]
    out_tile: tuple[int, int]

    def __post_init__(self):
        object.__setattr__(self, "crs", as_crs(self.crs))
        object.__setattr__(self, "base", Affine(*(_snap(v) for v in tuple(self.base)[:6])))

    # ---- identity ----------------------------------------------------------------------
    @property
    def key(self) -> tuple:
        """Hashable identity for cache keys: CRS + rounded affine + sizes."""
        return (crs_key(self.crs), tuple(self.base)[:6], self.tile, self.overlap, self.out_tile)

    # ---- geometry ------------------------------------------------------------------------
    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) output pixel size / input pixel size."""
        return (self.tile[0] / self.out_tile[0], self.tile[1] / self.out_tile[1])

    @property
    def out_transform(self) -> Affine:
        """Output lattice: output pixel (col, row) -> CRS coordinates."""
        fx, fy = self.scale
        return self.base @ Affine.scale(fx, fy)

    def input_block_grid(self, i0: int, j0: int, i1: int, j1: int) -> Grid:
        """The input grid (with overlap) of cells i0 <= i < i1, j0 <= j < j1 (one read for a block)."""
        tx, ty = self.tile
        ox, oy = self.overlap
        return Grid(
            self.crs,
            self.base @ Affine.translation(i0 * tx - ox, j0 * ty - oy),
            (i1 - i0) * tx + 2 * ox,
            (j1 - j0) * ty + 2 * oy,
        )

    def input_grid(self, i: int, j: int) -> Grid:
        """The input window (with overlap) the model sees for cell (i, j)."""
        return self.input_block_grid(i, j, i + 1, j + 1)

    def output_block_grid(self, i0: int, j0: int, i1: int, j1: int) -> Grid:
        """The output grid (cores only) of cells i0 <= i < i1, j0 <= j < j1."""
        ux, uy = self.out_tile
        return Grid(
            self.crs,
            self.out_transform @ Affine.translation(i0 * ux, j0 * uy),
            (i1 - i0) * ux,
            (j1 - j0) * uy,
        )

    def output_grid(self, i: int, j: int) -> Grid:
        """The output window (core, no overlap) of cell (i, j)."""
        return self.output_block_grid(i, j, i + 1, j + 1)

    def cells_for_output_window(
        self, col0: int, row0: int, col1: int, row1: int
    ) -> tuple[int, int, int, int]:
        """Cells (i0, j0, i1, j1), end exclusive, covering output pixels [col0, col1) x [row0, row1)."""
        ux, uy = self.out_tile
        return (col0 // ux, row0 // uy, -(-col1 // ux), -(-row1 // uy))

    def cells_for_input_window(self, col0: int, row0: int, col1: int, row1: int) -> tuple[int, int, int, int]:
        """Cells whose core intersects input pixels [col0, col1) x [row0, row1)."""
        tx, ty = self.tile
        return (col0 // tx, row0 // ty, -(-col1 // tx), -(-row1 // ty))


def lattice_for_proj(crs, transform: Affine, tile, overlap, out_tile) -> Lattice:
    """fix_input_proj=True: the lattice anchored at `transform`'s origin (the model's `proj`)."""
    return Lattice(as_crs(crs), transform, tuple(tile), tuple(overlap), tuple(out_tile))


def lattice_for_request(grid: Grid, tile, overlap, out_tile) -> tuple[Lattice, tuple[int, int]]:
    """fix_input_proj=False: the lattice of the request grid itself, anchored at the CRS origin.

    The request grid's pixels are the *output* pixels (EE adjusts the input projection for
    scale changes: inputs are sampled `output_tile_size / input_tile_size` times finer).
    Returns the lattice and the grid's (col, row) offset on the output lattice. When the
    grid's origin is a whole number of pixels from the CRS origin (every XYZ tile of a zoom
    is) the lattice origin is exactly (0, 0), so all such grids share cells; other grids keep
    their sub-pixel phase (and share cells with grids of the same phase).
    """
    t = grid.transform
    lin = Affine(t.a, t.b, 0.0, t.d, t.e, 0.0)
    px, py = ~lin @ (t.c, t.f)  # the grid origin, in pixels from the CRS origin
    offset = []
    frac = []
    for p in (px, py):
        r = round(p)
        if abs(p - r) < max(ALIGN_TOL, abs(p) * 1e-13):  # relative part: deep-zoom tiles
            offset.append(int(r))
            frac.append(0.0)
        else:
            f = math.floor(p)
            offset.append(int(f))
            frac.append(p - f)
    out_t = lin @ Affine.translation(frac[0], frac[1])
    base = out_t @ Affine.scale(out_tile[0] / tile[0], out_tile[1] / tile[1])
    return Lattice(grid.crs, base, tuple(tile), tuple(overlap), tuple(out_tile)), (offset[0], offset[1])


def aligned_offset(transform: Affine, crs: CRS, grid: Grid) -> tuple[int, int] | None:
    """If `grid` lies on the pixel lattice `transform` (same CRS and pixel size, whole-pixel
    offset), its (col, row) offset on it; else None (the request then needs resampling)."""
    if as_crs(crs) != grid.crs:
        return None
    g = grid.transform
    lin_ok = all(
        math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * max(abs(transform.a), abs(transform.e)))
        for a, b in ((transform.a, g.a), (transform.b, g.b), (transform.d, g.d), (transform.e, g.e))
    )
    if not lin_ok:
        return None
    col, row = ~transform @ (g.c, g.f)
    rc, rr = round(col), round(row)
    if abs(col - rc) > ALIGN_TOL or abs(row - rr) > ALIGN_TOL:
        return None
    return (int(rc), int(rr))


def pixel_window(
    transform: Affine, bounds: tuple[float, float, float, float], pad: int = 0
) -> tuple[int, int, int, int]:
    """The pixel window (col0, row0, col1, row1), end exclusive, of `transform` covering `bounds`
    (west, south, east, north in the lattice CRS), grown by `pad` pixels on each side."""
    w, s, e, n = bounds
    inv = ~transform
    cols, rows = zip(*(inv @ (x, y) for x, y in ((w, s), (w, n), (e, s), (e, n))))
    # Tolerate float noise so a bound that lies on a pixel edge does not add a pixel.
    c0 = math.floor(min(cols) + ALIGN_TOL) - pad
    r0 = math.floor(min(rows) + ALIGN_TOL) - pad
    c1 = math.ceil(max(cols) - ALIGN_TOL) + pad
    r1 = math.ceil(max(rows) - ALIGN_TOL) + pad
    return (c0, r0, max(c1, c0 + 1), max(r1, r0 + 1))


def intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int] | None:
    """Intersection of two (x0, y0, x1, y1) end-exclusive ranges, or None if empty."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    if x0 >= x1 or y0 >= y1:
        return None
    return (x0, y0, x1, y1)


def extract_cells(block: np.ndarray, n_cols: int, n_rows: int, tile, overlap) -> np.ndarray:
    """Cut a block read (C, H, W) into its cells' model inputs (n_rows * n_cols, h, w, C).

    The block is `input_block_grid` of n_cols x n_rows cells; cells are returned row-major
    (j outer, i inner). Views are cut with strides (no per-cell Python copies) and copied once,
    band by band: the result is a (N, h, w, C) view of (C, N, h, w) storage, so a model input
    of one band (N, h, w, 1) is contiguous as it is, and the copy moves whole pixel rows
    instead of interleaving the bands pixel by pixel (several times slower).
    """
    tx, ty = tile
    ox, oy = overlap
    h, w = ty + 2 * oy, tx + 2 * ox
    c = block.shape[0]
    assert block.shape[1:] == (n_rows * ty + 2 * oy, n_cols * tx + 2 * ox), (block.shape, n_cols, n_rows)
    windows = np.lib.stride_tricks.sliding_window_view(block, (h, w), axis=(1, 2))
    windows = windows[:, ::ty, ::tx]  # (C, n_rows, n_cols, h, w)
    return np.ascontiguousarray(windows).reshape(c, n_rows * n_cols, h, w).transpose(1, 2, 3, 0)


def cell_ranges(length_in: int, length_out: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of `length_out` output pixels, the [start, end) input pixels it covers.

    Output pixel k covers input [k * f, (k + 1) * f) with f = length_in / length_out; partly
    covered input pixels count (floor start, ceil end), so an output pixel is valid only if
    every input pixel under it is.
    """
    k = np.arange(length_out)
    start = np.floor(k * length_in / length_out + 1e-9).astype(np.int64)
    end = np.ceil((k + 1) * length_in / length_out - 1e-9).astype(np.int64)
    return start, np.maximum(end, start + 1)


def mask_to_output(valid: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """Map per-cell input validity (N, ty, tx) to output validity (N, outy, outx).

    The mask rule for scale changes: an output pixel is valid only where all input pixels
    it covers are valid (the minimum of the input masks over its footprint). For equal sizes
    this is the identity; when output pixels are smaller each takes the input pixel it lies
    in. Vectorised with a 2-D prefix sum of invalid pixels.
    """
    n, ty, tx = valid.shape
    ux, uy = out_size
    if (ty, tx) == (uy, ux):
        return valid.copy()
    invalid = (~valid).astype(np.int32)
    s = np.zeros((n, ty + 1, tx + 1), np.int32)
    s[:, 1:, 1:] = invalid.cumsum(1).cumsum(2)
    r0, r1 = cell_ranges(ty, uy)
    c0, c1 = cell_ranges(tx, ux)
    count = (
        s[:, r1[:, None], c1[None, :]]
        - s[:, r0[:, None], c1[None, :]]
        - s[:, r1[:, None], c0[None, :]]
        + s[:, r0[:, None], c0[None, :]]
    )
    return count == 0
