"""What a tile reply carries: a PNG, or the values the browser colours itself.

A `PredictionLayer` answers with `TileData` (float32 values of the bands its vis params
show, NaN where masked) and the browser colours them with the layer's compiled style
(js/colour.ts), so a palette or min/max change recolours the loaded tiles without asking the
kernel. Message tiles ("zoom in", errors) and a plain `KernelTileLayer`'s `tile_fn` stay PNGs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class TileData:
    """A tile's values: float32 (bands, rows, cols), NaN where masked, made for style `version`."""

    values: np.ndarray
    version: int  # the style whose bands these are (the browser waits for, or asks again after, a newer one)
    positions: tuple[int, ...]  # which of the image's bands they are (the style's `bands`)
    generation: int = 0  # the layer's data generation they were read under (the browser caches by it)

    def content(self) -> dict:
        """The reply fields that describe the buffer (little-endian float32, band-major)."""
        bands, rows, cols = self.values.shape
        return {
            "kind": "data", "bands": bands, "rows": rows, "cols": cols,
            "style": self.version, "positions": list(self.positions), "generation": self.generation,
        }  # fmt: skip

    def buffer(self) -> bytes:
        return np.ascontiguousarray(self.values, dtype="<f4").tobytes()


def nan_filled(read: np.ma.MaskedArray) -> np.ndarray:
    """A read's values as new float32, NaN where masked (what `TileData` carries).

    Branch-free: the bits of every masked pixel are OR-ed with a quiet NaN's (any value OR-ed
    with them is a NaN), so a speckled mask (a thresholded image) costs no more than a solid
    one; `np.ma.filled` copies, then writes NaN pixel by pixel where the mask says, up to
    twice as slow on such masks.
    """
    mask = np.ma.getmaskarray(read)
    data = np.ma.getdata(read).astype(np.float32, copy=False)
    bits = np.multiply(mask, np.uint32(0x7FC00000), dtype=np.uint32)
    np.bitwise_or(data.view(np.uint32), bits, out=bits)
    return bits.view(np.float32)


def is_tile(result: object) -> bool:
    """True for a tile the browser can show as is: data to colour, or PNG bytes."""
    if isinstance(result, TileData):
        return True
    return isinstance(result, (bytes, bytearray)) and bytes(result[:8]) == PNG_SIGNATURE
