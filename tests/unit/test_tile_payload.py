"""The values a data tile carries: float32, NaN exactly where the read is masked."""

from __future__ import annotations

import numpy as np
import pytest

from ee_model_widgets.widgets.tile_payload import TileData, nan_filled


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint8])
@pytest.mark.parametrize("pattern", ["speckled", "solid", "none", "all"])
def test_nan_filled_is_nan_exactly_where_masked_and_the_values_elsewhere(dtype, pattern):
    rng = np.random.default_rng(3)
    data = rng.uniform(-5, 5, (2, 64, 48)) if dtype != np.uint8 else rng.integers(0, 255, (2, 64, 48))
    data = data.astype(dtype)
    mask = {
        "speckled": rng.random(data.shape) < 0.5,
        "solid": np.arange(48)[None, None, :].repeat(64, 1).repeat(2, 0) < 20,
        "none": np.zeros(data.shape, bool),
        "all": np.ones(data.shape, bool),
    }[pattern]
    if dtype != np.uint8:
        data[0, 0, :3] = [np.nan, -np.inf, -0.0]  # whatever lies under or beside the mask
        mask[0, 0, :2] = True
    read = np.ma.MaskedArray(data, mask=mask)
    got = nan_filled(read)
    assert got.dtype == np.float32 and got.shape == data.shape
    np.testing.assert_array_equal(np.isnan(got), mask)  # negative values under the mask too
    np.testing.assert_array_equal(got[~mask], data[~mask].astype(np.float32))
    assert not np.shares_memory(got, data)
    # What goes on the wire: little-endian float32, NaN where masked.
    wire = np.frombuffer(TileData(got, 1, (0, 1)).buffer(), "<f4").reshape(data.shape)
    np.testing.assert_array_equal(np.isnan(wire), mask)


def test_nan_filled_of_an_array_with_no_mask_is_a_copy():
    data = np.arange(12, dtype=np.float32).reshape(1, 3, 4)
    got = nan_filled(np.ma.MaskedArray(data))
    np.testing.assert_array_equal(got, data)
    got[...] = 0
    assert data[0, 2, 3] == 11
