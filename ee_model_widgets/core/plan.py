"""`ReadPlan`: what reading a batch of grids from an image needs, worked out once.

`Image.plan(grids)` computes it without I/O; `Image.read_plan(plan)` reads it. The map layer
plans each batch of tiles once and uses the same plan for the zoom-out decision (a grid whose
plan carries a `TooManyCells` refusal is drawn as a "zoom in" tile) and for the read, so no
tile is planned twice. A prediction's plan holds its model cells per grid; views and band math
hold the plans of the images they read (`parents`), so a plan reaches every model under them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import TooManyCells
from .grid import Grid


@dataclass(frozen=True)
class ReadPlan:
    """The plan of reading `bands` of `grids` (one entry per grid in every per-grid field)."""

    grids: tuple[Grid, ...]
    bands: tuple[str, ...]
    resampling: Any
    #: Model cells each grid needs, cached or not (0 for images without a model).
    cells: tuple[int, ...]
    #: Per grid, why it will not be read (over its cell budget), or None.
    refusals: tuple[TooManyCells | None, ...]
    #: Per grid, the planning detail of the image itself (a prediction's cells), or ().
    detail: tuple = ()
    #: Plans of the images this one reads (same grids, in the image's own order).
    parents: tuple[ReadPlan, ...] = ()

    def subset(self, indices: Sequence[int]) -> ReadPlan:
        """The plan of some of the grids only (e.g. without the refused ones)."""

        def pick(seq: tuple) -> tuple:
            return tuple(seq[i] for i in indices) if seq else seq

        return dataclasses.replace(
            self,
            grids=pick(self.grids),
            cells=pick(self.cells),
            refusals=pick(self.refusals),
            detail=pick(self.detail),
            parents=tuple(p.subset(indices) for p in self.parents),
        )

    def check(self) -> None:
        """Raise the first refusal, if any (a read of a plan reads every grid or none)."""
        for refusal in self.refusals:
            if refusal is not None:
                raise refusal


def plan_of_parents(
    grids: Sequence[Grid], bands: Sequence[str], resampling, parents: Sequence[ReadPlan]
) -> ReadPlan:
    """The plan of an image that reads `parents` (views, band math): cells add up over the
    parents, and a grid is refused when any parent refuses it."""
    n = len(grids)
    cells = tuple(sum(p.cells[i] for p in parents) for i in range(n))
    refusals = tuple(
        next((p.refusals[i] for p in parents if p.refusals[i] is not None), None) for i in range(n)
    )
    return ReadPlan(tuple(grids), tuple(bands), resampling, cells, refusals, (), tuple(parents))
