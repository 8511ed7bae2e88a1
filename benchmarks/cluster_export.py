"""Exports on dask.distributed: scaling with worker processes, engine overhead, memory per worker.

The demo FCN (three 3x3 convolutions, compute-bound) predicts a lazy synthetic scene of
--size x --size px, exported to a Cloud-Optimized GeoTIFF by `pred.export`:

(a) 1 vs 2 worker processes of 1 thread each (LocalCluster, TensorFlow limited to the
    worker's thread, the dask convention of one thread per core): target >= 1.7x on 2 cores;
(b) 1 worker process with every core / the local export (threads in this process, no
    dask): target <= 1.15, what the engine (pickling, scheduling, results travelling back)
    costs;
(c) the export's own memory in each worker process (peak RSS minus the RSS after TensorFlow
    and the model were loaded by a small warm-up export; fresh clusters, so high-water marks
    do not carry over), --size/2 vs --size: flat when memory is bounded by the chunks.
Every run writes the same bytes (checked: SHA-256 of each file against the local one).

Run: .venv/bin/python benchmarks/cluster_export.py [--size 16384]. A quicker check: --size 4096
(16 chunks of 1024 px); below that there are too few chunks per worker for the ratios to mean
anything (1024: one chunk, one busy worker).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time


def sha(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def worker_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def prediction(size: int):
    from ee_model_widgets import demo

    return demo.model("fcn").predict_image(demo.synthetic_scene(size, size, bands=("red", "nir")), cache=None)


def run_cluster(size: int, n_workers: int, threads: int, path: str) -> tuple[float, list[float]]:
    """Seconds of one export on a fresh LocalCluster, and each worker's own export memory (MiB)."""
    from distributed import Client, LocalCluster

    env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
            env=env,
        ) as cluster,
        Client(cluster) as client,
    ):
        # warm-up: every worker imports TensorFlow and loads the model before the clock starts
        os.remove(prediction(512).export(path, client=client, progress=False, block_size=256))
        baseline = client.run(worker_peak_mib)
        pred = prediction(size)
        t0 = time.perf_counter()
        pred.export(path, client=client, progress=False)
        seconds = time.perf_counter() - t0
        peaks = client.run(worker_peak_mib)
    return seconds, sorted(peaks[w] - baseline.get(w, 0.0) for w in peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="scene side in px (default 16384)")
    args = parser.parse_args()
    size = args.size
    cpus = os.cpu_count() or 1
    print(f"scene {size}x{size} px, demo FCN, {cpus} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as d:
        local_path = os.path.join(d, "local.tif")
        prediction(512).export(os.path.join(d, "warm.tif"), progress=False, block_size=256)  # TF warm-up
        pred = prediction(size)
        t0 = time.perf_counter()
        pred.export(local_path, progress=False)
        t_local = time.perf_counter() - t0
        ref = sha(local_path)
        print(f"local export (threads in this process): {t_local:.1f} s")

        p = os.path.join(d, "c.tif")
        t_full, _ = run_cluster(size, 1, cpus, p)
        assert sha(p) == ref, "1 worker x all threads wrote different bytes"
        print(f"1 worker x {cpus} threads: {t_full:.1f} s")
        t_one, peaks_big = run_cluster(size, 1, 1, p)
        assert sha(p) == ref, "1 worker x 1 thread wrote different bytes"
        print(f"1 worker x 1 thread: {t_one:.1f} s")
        t_two, peaks_two = run_cluster(size, 2, 1, p)
        assert sha(p) == ref, "2 workers wrote different bytes"
        print(f"2 workers x 1 thread: {t_two:.1f} s (identical files: True)")
        half = size // 2
        _, peaks_half = run_cluster(half, 2, 1, os.path.join(d, "half.tif"))

    a, b = t_one / t_two, t_full / t_local
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    m_half, m_big = mean(peaks_half), mean(peaks_two)
    if m_half <= 0:  # the warm-up's own peak was not exceeded: nothing to compare
        print(f"(c) n/a: the {half}^2 export stayed under the warm-up's memory peak; use a larger --size")
        m_half = float("nan")
    print(f"(a) speed-up 2 workers vs 1 worker: {a:.2f}x (target >= 1.7)")
    print(f"(b) 1 worker (all {cpus} threads) / local export: {b:.2f} (target <= 1.15)")
    print(
        f"(c) export memory per worker (peak - after model load): {half}^2 {m_half:.0f} MiB, "
        f"{size}^2 {m_big:.0f} MiB -> ratio {m_big / m_half:.2f} (target: flat, ~1.0)"
    )
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _figures import record

    scene = f"{size}² synthetic scene through the demo FCN to a COG"
    record(
        "cluster_export.a",
        f"Export on 2 / 1 worker processes (LocalCluster), {scene}",
        f"{a:.2f}x",
        ">= 1.7x",
    )
    record(
        "cluster_export.b",
        f"Export on 1 worker process with every core / the local export (threads), {scene}",
        f"{b:.2f} ({t_full:.1f} vs {t_local:.1f} s)",
        "<= 1.15",
    )
    if m_half > 0 and m_big == m_big:  # a figure only where both sizes measured one (not NaN)
        record(
            "cluster_export.c",
            f"Export memory per worker (peak RSS - after model load), {size}² / {half}², 2 workers",
            f"{m_big / m_half:.2f} ({m_big:.0f} vs {m_half:.0f} MiB)",
            "~1.0 (flat)",
        )


if __name__ == "__main__":
    main()
