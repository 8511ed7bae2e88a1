"""The Earth Engine "mixer" sidecar: georeferencing of a TFRecord patch export.

Exactly Earth Engine's keys (see docs/earth-engine-semantics.md, section 5.2)::

    {"projection": {"crs": "EPSG:4326",
                    "affine": {"doubleMatrix": [xScale, xShear, xTrans, yShear, yScale, yTrans]}},
     "patchDimensions": [width, height], "patchesPerRow": 5, "totalPatches": 15}

The affine is the transform of the un-buffered patch grid's top-left pixel; the mixer does
not record the kernel margin. `doubleMatrix` is in the same order as `affine.Affine(a..f)`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from affine import Affine

from ..core.grid import Grid, as_crs
from ..errors import ProjectionError, TFRecordError


@dataclass(frozen=True)
class Mixer:
    """A parsed mixer: the patch grid of an export, `patches_per_row` x `rows` patches of
    `patch_width` x `patch_height` pixels laid out row-major from `transform`'s origin."""

    crs: str
    transform: Affine
    patch_width: int
    patch_height: int
    patches_per_row: int
    total_patches: int

    @property
    def rows(self) -> int:
        """Rows of patches (`totalPatches / patchesPerRow`)."""
        return self.total_patches // self.patches_per_row

    @property
    def grid(self) -> Grid:
        """The pixel grid covered by all patches (without kernel margins)."""
        return Grid(
            self.crs,
            self.transform,
            self.patches_per_row * self.patch_width,
            self.rows * self.patch_height,
        )

    def to_dict(self) -> dict[str, Any]:
        """Earth Engine's JSON structure, keys in Earth Engine's order."""
        t = self.transform
        return {
            "projection": {
                "crs": self.crs,
                "affine": {"doubleMatrix": [t.a, t.b, t.c, t.d, t.e, t.f]},
            },
            "patchDimensions": [self.patch_width, self.patch_height],
            "patchesPerRow": self.patches_per_row,
            "totalPatches": self.total_patches,
        }

    def to_json(self) -> str:
        """The sidecar text, laid out like Earth Engine's (two-space indents, lists on one line)."""
        d = self.to_dict()
        p = d["projection"]
        return (
            "{\n"
            '  "projection": {\n'
            f'    "crs": {json.dumps(p["crs"])},\n'
            '    "affine": {\n'
            f'      "doubleMatrix": {json.dumps(p["affine"]["doubleMatrix"])}\n'
            "    }\n"
            "  },\n"
            f'  "patchDimensions": {json.dumps(d["patchDimensions"])},\n'
            f'  "patchesPerRow": {d["patchesPerRow"]},\n'
            f'  "totalPatches": {d["totalPatches"]}\n'
            "}"
        )

    @classmethod
    def from_grid(cls, grid: Grid, patch_width: int, patch_height: int) -> Mixer:
        """The mixer of an export of `grid` in whole patches (partial border patches dropped)."""
        per_row = grid.width // patch_width
        rows = grid.height // patch_height
        return cls(crs_string(grid.crs), grid.transform, patch_width, patch_height, per_row, per_row * rows)


def crs_string(crs) -> str:
    """'EPSG:nnnn' when the CRS has an EPSG code (what Earth Engine writes), else WKT."""
    crs = as_crs(crs)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def load_mixer(mixer: str | os.PathLike | Mapping) -> Mixer:
    """Parse and validate a mixer given as a path to `<prefix>-mixer.json` or as a dict."""
    if isinstance(mixer, Mapping):
        where = "The mixer dict"
        data = mixer
    else:
        path = os.fspath(mixer)
        where = f"Mixer file {path}"
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise TFRecordError(
                f"{where} not found: pass the '<prefix>-mixer.json' written next to the exported shards."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise TFRecordError(f"{where} cannot be read ({exc}): check the path.") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TFRecordError(
                f"{where} is not valid JSON ({exc}): it is corrupt or not a mixer; use the "
                "'<prefix>-mixer.json' of the export."
            ) from None
        if not isinstance(data, Mapping):
            raise TFRecordError(f"{where} holds {type(data).__name__}, not a JSON object: it is not a mixer.")
    return _validate(data, where)


_REQUIRED = (
    "projection",
    "projection.crs",
    "projection.affine",
    "projection.affine.doubleMatrix",
    "patchDimensions",
    "patchesPerRow",
    "totalPatches",
)


def _get(data: Mapping, dotted: str):
    cur: Any = data
    for key in dotted.split("."):
        if not isinstance(cur, Mapping) or key not in cur:
            return _MISSING
        cur = cur[key]
    return cur


_MISSING = object()


def _validate(data: Mapping, where: str) -> Mixer:
    missing = [k for k in _REQUIRED if _get(data, k) is _MISSING]
    # Report only the outermost missing key ("projection" rather than all its children).
    missing = [k for k in missing if not any(k.startswith(m + ".") for m in missing)]
    if missing:
        raise TFRecordError(
            f"{where} lacks required key(s) {missing}: an Earth Engine mixer has 'projection' "
            "{'crs', 'affine': {'doubleMatrix'}}, 'patchDimensions', 'patchesPerRow' and "
            "'totalPatches'. Use the mixer written by the export of these patches."
        )

    def bad(key: str, why: str) -> TFRecordError:
        return TFRecordError(f"{where}: '{key}' {why}. Use the mixer written by the export of these patches.")

    matrix = _get(data, "projection.affine.doubleMatrix")
    if (
        not isinstance(matrix, list)
        or len(matrix) != 6
        or not all(_is_number(v) and math.isfinite(v) for v in matrix)
    ):
        raise bad(
            "doubleMatrix",
            f"must be 6 finite numbers [xScale, xShear, xTrans, yShear, yScale, yTrans], got {matrix!r}",
        )
    transform = Affine(*(float(v) for v in matrix))
    if transform.determinant == 0:
        raise bad("doubleMatrix", f"is degenerate (zero scale): {matrix!r}")

    crs = _get(data, "projection.crs")
    if not isinstance(crs, str):
        raise bad("crs", f"must be a string such as 'EPSG:4326', got {crs!r}")
    try:
        as_crs(crs)
    except ProjectionError as exc:
        raise bad("crs", f"is not a usable CRS ({exc})") from None

    dims = data["patchDimensions"]
    if not isinstance(dims, list) or len(dims) != 2 or not all(_is_int(v) and v > 0 for v in dims):
        raise bad("patchDimensions", f"must be [width, height], two positive integers, got {dims!r}")
    per_row, total = data["patchesPerRow"], data["totalPatches"]
    if not _is_int(per_row) or per_row <= 0:
        raise bad("patchesPerRow", f"must be a positive integer, got {per_row!r}")
    if not _is_int(total) or total <= 0:
        raise bad("totalPatches", f"must be a positive integer, got {total!r}")
    if total % per_row:
        raise bad("totalPatches", f"({total}) must be a multiple of patchesPerRow ({per_row})")
    return Mixer(crs, transform, int(dims[0]), int(dims[1]), int(per_row), int(total))


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v) -> bool:
    return _is_number(v) and float(v).is_integer()
