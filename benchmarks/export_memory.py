"""Peak memory of exporting a predicted synthetic scene: 8192 x 8192 vs 2048 x 2048.

Each size runs in its own subprocess (a fresh interpreter, so high-water marks do not
carry over) that builds the lazy synthetic scene, applies the demo FCN and exports the
prediction to a Cloud-Optimized GeoTIFF through `PredictedImage.export` (window by window). The child
reports its RSS high-water mark (`getrusage(RUSAGE_SELF).ru_maxrss`) after importing and
loading the model (the baseline: ~800 MiB of TensorFlow), and after the export. The figure
is the export's own memory, the peak minus that baseline, and the ratio of those deltas
(a ratio of total RSS would hide the export behind TensorFlow). Target: the 8192^2 export
needs at most 10% more memory of its own than the 2048^2 one (bounded by the window, not
the scene).

A peak is the worst moment of a run: the export threads' model calls (most of the export's
memory, the same whatever the size) now and then coincide with the chunks waiting to be
written. A longer run meets its worst coincidence more surely, so one short export under-reads
its peak against a long one: single 2048² runs measured 222-283 MiB under the same code,
the 8192² run 294-308 MiB, and 2048² exported 8 times in a row reached 330 MiB. So the
smaller scene is exported again (in the same process) until it has written as many pixels as
the largest one: both peaks see the same work, and what differs is the size of the scene
being written (each repeat also restarts the thread pool, which if anything adds to the small
scene's peak: the single-run figures are printed too, the first repeat's peak).

GDAL's block cache is held at 32 MiB during an export (`core/gdal_cache.py`): with GDAL's
default (5% of the RAM) the 8192² export kept its whole 256 MiB temporary in the cache
(measured: RSS grew steadily through the write) and this ratio was 1.875.

Run: .venv/bin/python benchmarks/export_memory.py [--sizes 2048 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def peak_mib() -> float:
    # ru_maxrss is in KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(size: int, repeats: int = 1) -> None:
    from ee_model_widgets.core.cache import CellCache
    from ee_model_widgets.demo import synthetic_scene

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from core_pipeline import load_model

    model, label = load_model(16)
    img = synthetic_scene(size, size, bands=("red", "nir"))
    # a small warm-up so TF's one-off allocations count in the baseline
    model.predict_image(img, cache=None).read(img.grid.window(0, 0, 256, 256))
    base = peak_mib()
    pred = model.predict_image(img, cache=CellCache(512 * 1024 * 1024))
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = pred.export(os.path.join(d, "pred.tif"), progress=False)
        seconds = time.perf_counter() - t0
        first_peak = peak_mib()
        for _ in range(repeats - 1):
            pred.export(os.path.join(d, "pred.tif"), progress=False)
        size_mb = os.path.getsize(path) / 2**20
    print(
        json.dumps(
            {
                "size": size,
                "repeats": repeats,
                "first_peak_mib": first_peak,
                "model": label,
                "baseline_mib": base,
                "peak_mib": peak_mib(),
                "seconds": seconds,
                "file_mib": size_mb,
                "cells_in_shared_cache": len(pred.cache),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--repeats", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.repeats)
        return
    results = []
    largest = max(args.sizes)
    for size in args.sizes:
        repeats = max(1, round((largest / size) ** 2))  # the same pixels written by every size
        out = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--child", str(size), "--repeats", str(repeats)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            sys.exit(f"child for {size} failed:\n{out.stderr[-3000:]}")
        r = json.loads(lines[-1])
        results.append(r)
        print(
            f"{size}x{size} exported {r['repeats']}x: peak RSS {r['peak_mib']:.0f} MiB (after model load "
            f"{r['baseline_mib']:.0f} MiB, export +{r['peak_mib'] - r['baseline_mib']:.0f} MiB; first export "
            f"alone +{r['first_peak_mib'] - r['baseline_mib']:.0f} MiB), {r['seconds']:.1f} s per export, "
            f"file {r['file_mib']:.0f} MiB, cells left in the shared cache: {r['cells_in_shared_cache']}"
        )
    if len(results) >= 2:
        small, big = results[0], results[-1]
        d_small = small["peak_mib"] - small["baseline_mib"]
        d_big = big["peak_mib"] - big["baseline_mib"]
        d_first = small["first_peak_mib"] - small["baseline_mib"]
        print(
            f"export memory (peak - baseline) {big['size']}^2 / {small['size']}^2 = "
            f"{d_big:.0f} / {d_small:.0f} MiB = {d_big / d_small:.3f} (target <= 1.10; model {small['model']})"
        )
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from _figures import record

        record(
            "export_memory.a",
            f"Export memory of its own (peak RSS - RSS after model load), {big['size']}² / {small['size']}² "
            f"synthetic scene through the demo FCN to a COG ({small['size']}² exported {small['repeats']}x: "
            "the same pixels written)",
            f"{d_big / d_small:.3f} ({d_big:.0f} vs {d_small:.0f} MiB); against one {small['size']}² export: "
            f"{d_big / d_first:.2f} ({d_first:.0f} MiB)",
            "<= 1.10",
        )


if __name__ == "__main__":
    main()
