"""Exports on dask.distributed: scaling with worker processes, engine overhead, memory per worker.

The demo FCN (three 3x3 convolutions, compute-bound) predicts a lazy synthetic scene of
--size x --size px, exported to a Cloud-Optimized GeoTIFF by `pred.export`:

(a) 1 vs 2 worker processes of 1 thread each (LocalCluster, TensorFlow limited to the
    worker's thread, the dask convention of one thread per core): target >= 1.7x on 2 cores;
(b) 1 worker process with every core / the local export (threads in this process, no
    dask): target <= 1.15, what the engine (pickling, scheduling, results travelling back)
    costs;
(c) peak RSS of each worker process exporting --size/2 vs --size (fresh clusters, so the
    high-water marks do not carry over): flat when memory is bounded by the chunk.
Every run writes the same bytes (checked: SHA-256 of each file against the local one).

Run: .venv/bin/python benchmarks/cluster_export.py [--size 16384]  (quick check: --size 2048)
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
    """Seconds of one export on a fresh LocalCluster, and each worker's peak RSS (MiB)."""
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
        pred = prediction(size)
        # warm-up: every worker imports TensorFlow and loads the model before the clock starts
        warm = pred.export(path, region=None, client=client, progress=False, block_size=256 * n_workers)
        os.remove(warm)
        t0 = time.perf_counter()
        pred.export(path, client=client, progress=False)
        seconds = time.perf_counter() - t0
        peaks = sorted(client.run(worker_peak_mib).values())
    return seconds, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="scene side in px (default 16384)")
    args = parser.parse_args()
    size = args.size
    cpus = os.cpu_count() or 1
    print(f"scene {size}x{size} px, demo FCN, {cpus} CPUs, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as d:
        local_path = os.path.join(d, "local.tif")
        pred = prediction(size)
        pred.export(os.path.join(d, "warm.tif"), region=None, progress=False, block_size=256)  # TF warm-up
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

    print(f"(a) speed-up 2 workers vs 1 worker: {t_one / t_two:.2f}x (target >= 1.7)")
    print(f"(b) 1 worker (all {cpus} threads) / local export: {t_full / t_local:.2f} (target <= 1.15)")
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print(
        f"(c) peak RSS per worker: {half}^2 {mean(peaks_half):.0f} MiB, {size}^2 {mean(peaks_two):.0f} MiB "
        f"-> ratio {mean(peaks_two) / mean(peaks_half):.2f} (target: flat, ~1.0)"
    )


if __name__ == "__main__":
    main()
