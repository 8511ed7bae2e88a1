"""The README's Python snippets run as printed, on the demo data, and do what their comments say.

Each test takes a code block from README.md by its section heading and runs it unchanged; names
the README leaves to the reader (`other_model`, a point to label, ...) are given beforehand, and
lines that need a dask cluster are left out (the cluster export has tests of its own).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import rasterio

import ee_model_widgets as emw
from ee_model_widgets import demo

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(heading: str) -> str:
    """The first ```python block after `heading` in README.md."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{heading}\n")
    block = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert block, f"no python block under {heading!r}"
    return block.group(1)


def run(code: str, namespace: dict) -> dict:
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    return namespace


@pytest.fixture
def usage(tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    return run(snippet("## Usage"), {})


def test_usage_predicts_exports_and_maps(usage, tmp_path):
    arr, pred = usage["arr"], usage["pred"]
    assert isinstance(arr, np.ma.MaskedArray) and arr.ndim == 3 and arr.shape[0] == 1  # (bands, rows, cols)
    assert pred.band_names == ["ndvi_smooth"] and np.isfinite(arr.compressed()).all() and arr.count() > 1000
    with rasterio.open(tmp_path / "ndvi_smooth.tif") as f:
        written = f.read(1, masked=True)
    np.testing.assert_array_equal(written.filled(np.nan), pred.to_numpy()[0].filled(np.nan))
    layers = [layer for layer in usage["m"].layers if isinstance(layer, emw.PredictionLayer)]
    assert [layer.name for layer in layers] == ["smoothed NDVI"]


def test_large_areas_to_xarray_and_exports(usage, tmp_path):
    code = snippet("## Large areas: lazy xarray and exports on dask.distributed")
    # Leave out the lines that need a dask.distributed cluster.
    local = "\n".join(line for line in code.splitlines() if "client" not in line.lower())
    ns = run(local, usage)  # `pred` from the Usage snippet
    da, pred = ns["da"], usage["pred"]
    assert da.dims == ("band", "y", "x") and ns["small"].shape == da.shape  # the scene is < 512 px
    assert da.rio.crs == pred.grid.crs and da.rio.transform() == pred.grid.transform
    for name in ("out.tif", "plain.tif"):
        with rasterio.open(tmp_path / name) as f:
            np.testing.assert_array_equal(f.read(1), da.values[0])


def test_band_math(tmp_path, monkeypatch):
    import rioxarray

    monkeypatch.chdir(tmp_path)
    img = demo.scene()
    ns = {
        "emw": emw,
        "img": img,
        "pred": demo.model("landcover").predict_image(img),
        "m": emw.Map(basemap=None),
        "other_model": demo.model("fcn"),
        "lazy_dask_dataarray": rioxarray.open_rasterio(demo.scene_path(), chunks=128),
    }
    ns = run(snippet("## Band math (Earth Engine's image operations)"), ns)
    assert ns["ndvi"].band_names == ["nd"]  # band "nd"
    assert ns["evi"].band_names == ["evi"]
    likely = ns["likely"].to_numpy()
    veg = ns["pred"].select("landcover_3").to_numpy()
    assert np.array_equal(~likely.mask[0], ~veg.mask[0] & (veg.data[0] > 0.5)) and likely.count() > 0
    classes = ns["classes"].to_numpy().compressed()
    assert set(np.unique(classes)) <= {0, 1, 2, 3}
    assert ns["second"].band_names == ["ndvi_smooth"] and ns["second"].to_numpy().count() > 0
    assert ns["da_image"].to_numpy().shape == img.to_numpy().shape


def test_prototype_a_classifier(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = demo.scene()
    west, south, east, north = img.bounds
    w, h = east - west, north - south
    ns = {
        "emw": emw,
        "img": img,
        "m": emw.Map(basemap=None),
        "lon": west + 0.5 * w,
        "lat": south + 0.5 * h,
        "west": west,
        "south": south,
        "east": west + 0.2 * w,
        "north": south + 0.2 * h,
    }
    code = snippet("## Prototype a classifier")
    # The labels are the truth the README evaluates against.
    ns = run(code.replace("truth_labels_or_class_image", "labels"), ns)
    clf, pred = ns["clf"], ns["pred"]
    # bands: one probability per class, then "classification"
    assert pred.band_names == ["water", "forest", "bare", "classification"]
    back = emw.Labels.from_geojson(ns["labels"].to_geojson())
    assert back.to_geojson() == ns["labels"].to_geojson()  # round-trips exactly
    assert (tmp_path / "clf.keras").is_file() and clf.model is not None
