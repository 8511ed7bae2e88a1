"""Chunks of an output grid for lazy arrays and exports: whole model cells per chunk.

A chunk is one task: reading it runs the model once on all the cells under it (one batched
call, split only by the model's `max_batch_size`). When the grid lies on a prediction's
output lattice, chunk edges fall on cell edges, so no cell is computed by two chunks and
what a chunk computes depends only on the chunk: the result is the same whatever runs the
chunks, in which order and on how many workers.
"""

from __future__ import annotations

from .grid import Grid

#: Default chunk side in pixels (rounded to whole cells): ~1 Mpx, a few MB per band.
DEFAULT_CHUNK = 1024


def cell_layout(image, grid: Grid) -> tuple[int, int, int, int] | None:
    """(cell width, cell height, phase x, phase y) of `image`'s model cells on `grid`, or None.

    The phase is where the first cell edge falls inside the grid (0 = at its origin). None
    for images that are not predictions, or when `grid` is not on the output lattice (a
    reprojected read: its pixels are resampled from cells anyway).
    """
    detail = image.plan([grid]).detail  # a prediction's cells of `grid` (no I/O)
    plan = detail[0] if detail else None
    if plan is None or plan.offset is None:
        return None
    ux, uy = plan.lattice.out_tile
    return ux, uy, (-plan.offset[0]) % ux, (-plan.offset[1]) % uy


def _edges(length: int, step: int, phase: int = 0) -> list[int]:
    cuts = range(phase if phase else step, length, step)
    return [0, *cuts, length]


def chunk_edges(image, grid: Grid, chunks=None) -> tuple[list[int], list[int]]:
    """Column and row edges of the chunks of `grid` (each list starts at 0, ends at the size).

    `chunks`: None (about `DEFAULT_CHUNK` px, whole cells of a prediction, on cell edges), an
    int (square chunks of that many pixels) or (rows, cols); sizes that are whole cells are
    placed on cell edges, others start at the grid's origin.
    """
    from ..errors import InputError

    if chunks is not None:
        if isinstance(chunks, int) and not isinstance(chunks, bool):
            cy = cx = chunks
        elif isinstance(chunks, (tuple, list)) and len(chunks) == 2:
            cy, cx = chunks
        else:
            cy = cx = None
        if not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in (cy, cx)):
            raise InputError(f"chunks must be None, a positive int or (rows, cols) ints, got {chunks!r}.")
        layout = cell_layout(image, grid)
        if layout is not None and cx % layout[0] == 0 and cy % layout[1] == 0:
            # whole cells: put the edges on cell edges, so no cell is computed twice
            return _edges(grid.width, cx, layout[2]), _edges(grid.height, cy, layout[3])
        return _edges(grid.width, cx), _edges(grid.height, cy)
    layout = cell_layout(image, grid)
    if layout is None:
        return _edges(grid.width, DEFAULT_CHUNK), _edges(grid.height, DEFAULT_CHUNK)
    ux, uy, px, py = layout
    sx = ux * max(1, round(DEFAULT_CHUNK / ux))
    sy = uy * max(1, round(DEFAULT_CHUNK / uy))
    return _edges(grid.width, sx, px), _edges(grid.height, sy, py)


def windows(cols: list[int], rows: list[int]) -> list[tuple[int, int, int, int]]:
    """(col, row, width, height) of every chunk, row by row."""
    return [(c0, r0, c1 - c0, r1 - r0) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]
