"""Where the cold viewport of `prediction_layer.py` (a) spends its time, stage by stage.

Runs that benchmark's cold 24-tile viewport (demo FCN on a 2048x2048 synthetic GeoTIFF, zoom
16) with timers around the stages of the tile path and prints, per stage, the CPU time of the
threads that ran it (summed over the layer's worker threads; TensorFlow's own thread pool is
not in the model line, see "process CPU") and the wall time spent inside it (overlapping
stages on two workers add up to more than the wall time of the viewport). Timers wrap the
functions by name, so a renamed stage shows as missing rather than wrong. No figure is
recorded: this explains (a), it is not a target.

Run: .venv/bin/python benchmarks/layer_stages.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import prediction_layer as pl

import ee_model_widgets as emw
from ee_model_widgets import demo
from ee_model_widgets.core import predicted, raster
from ee_model_widgets.core.model import Model
from ee_model_widgets.widgets import prediction_layer as layer_module
from ee_model_widgets.widgets.headless import HeadlessView
from ee_model_widgets.widgets.tile_payload import TileData

# (owner, attribute, label): the stages of one batch of tiles, outermost first.
STAGES = [
    (layer_module.PredictionLayer, "_render_many", "whole batch (layer._render_many)"),
    (predicted.PredictedImage, "_make_plan", "plan the cells of a tile"),
    (predicted.PredictedImage, "_compute", "compute missing cells (read + cut + model + mask)"),
    (raster.FileImage, "read", "  read the source (GDAL decode + warp to the map grid)"),
    (predicted, "extract_cells", "  cut the cells out of the read"),
    (Model, "predict_cells", "  model: inputs, batched call, outputs"),
    (predicted.PredictedImage, "_assemble", "assemble a tile from its cells"),
    (TileData, "buffer", "tile data to bytes (the browser colours it)"),
]
WALL: dict[str, float] = collections.defaultdict(float)
CPU: dict[str, float] = collections.defaultdict(float)
CALLS: collections.Counter = collections.Counter()
_lock = threading.Lock()


def _timed(fn, label):
    def wrapper(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            with _lock:
                WALL[label] += time.perf_counter() - t0
                CPU[label] += time.thread_time() - c0
                CALLS[label] += 1

    return wrapper


def _process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    missing = [f"{owner.__name__}.{name}" for owner, name, _ in STAGES if not hasattr(owner, name)]
    for owner, name, label in STAGES:
        if hasattr(owner, name):
            setattr(owner, name, _timed(getattr(owner, name), label))
    fetch = HeadlessView.fetch
    with tempfile.TemporaryDirectory() as tmp:
        path = demo.synthetic_geotiff(Path(tmp) / "synthetic.tif", 2048, 2048, bands=("red", "nir"))
        pl.with_overviews(path)
        image = emw.Image.open(path)
        for run in range(args.repeat):
            raster.clear_block_cache()  # cold: no warped source block either
            seen = {"n": 0}
            out: dict[str, float] = {}

            def timed_fetch(view, tiles, *a, seen=seen, out=out, **k):
                seen["n"] += 1
                if seen["n"] != 3:  # the two warm-up fetches, then the viewport
                    return fetch(view, tiles, *a, **k)
                for d in (WALL, CPU, CALLS):
                    d.clear()
                c0, t0 = _process_cpu(), time.perf_counter()
                try:
                    return fetch(view, tiles, *a, **k)
                finally:
                    out["wall"], out["cpu"] = time.perf_counter() - t0, _process_cpu() - c0
                    with _lock:  # the viewport only: the benchmark goes on with restyles
                        out["stages"] = (dict(CPU), dict(WALL), dict(CALLS))

            HeadlessView.fetch = timed_fetch
            try:
                a = pl.bench_viewport(image)
            finally:
                HeadlessView.fetch = fetch
            print(
                f"run {run + 1}: load average {os.getloadavg()[0]:.1f}; cold {a['tiles']}-tile viewport "
                f"{1e3 * out['wall']:.0f} ms wall, {1e3 * out['cpu']:.0f} ms process CPU; raw model call "
                f"{1e3 * a['raw_s']:.0f} ms on the same {a['cells']} cells (ratio {a['layer_s'] / a['raw_s']:.2f})"
            )
            # TensorFlow spreads the raw call over the cores too, so the layer can only come
            # within the target if its CPU, not only its scheduling, is close to the model's.
            cores = os.cpu_count() or 1
            print(
                f"  raw model call {1e3 * a['raw_cpu_s']:.0f} ms process CPU; on {cores} cores the viewport "
                f"needs >= {1e3 * out['cpu'] / cores:.0f} ms (its CPU / cores), ratio >= "
                f"{out['cpu'] / cores / a['raw_s']:.2f} however its work is scheduled"
            )
            print(f"  {'stage':52s} {'thread CPU':>11s} {'wall inside':>12s} {'calls':>6s}")
            cpu, wall, calls = out["stages"]
            for _, _, label in STAGES:
                if label in calls:
                    print(
                        f"  {label:52s} {1e3 * cpu[label]:8.1f} ms {1e3 * wall[label]:9.1f} ms {calls[label]:6d}"
                    )
    if missing:
        print(f"(not timed, no longer in the code: {', '.join(missing)})", file=sys.stderr)


if __name__ == "__main__":
    main()
