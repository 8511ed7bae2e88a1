"""Exports on dask.distributed: scaling with worker processes, engine overhead, memory per worker.

The demo FCN (three 3x3 convolutions, compute-bound) predicts a lazy synthetic scene of
--size x --size px, exported to a Cloud-Optimized GeoTIFF by `pred.export`:

(a) 1 vs 2 worker processes of 1 thread each (LocalCluster, TensorFlow limited to the
    worker's thread, the dask convention of one thread per core): target >= 1.7x on 2 cores;
(b) 1 worker process with every core / the local export (threads in this process, no
    dask): target <= 1.15, what the engine (pickling, scheduling, results travelling back)
    costs;
(c) the export's own memory in each worker process (its RSS sampled every 20 ms during the
    export, peak minus the RSS just before, after TensorFlow and the model were loaded by a
    small warm-up export), --size/2 vs --size on fresh clusters: flat when memory is bounded
    by the chunks. The half size is exported 4 times in a row (the same pixels as the full
    size): a peak is the worst moment of a run, which a longer run meets more surely (see
    export_memory.py).
Every run writes the same bytes (checked: SHA-256 of each file against the local one).

Worker processes start without dask's default `MALLOC_TRIM_THRESHOLD_=65536` (the
`distributed.nanny.pre-spawn-environ` setting, the glibc default instead, as in the local
process): with it, glibc hands every freed block over 128 KiB back to the OS and every
array of a model call is a fresh mmap whose pages fault in again; measured: +40% CPU per
chunk (mostly system time) in a worker against the same chunks in this process, the whole
of (b)'s engine cost. `--dask-malloc` keeps dask's setting to compare.

Run: .venv/bin/python benchmarks/cluster_export.py [--size 16384]. The default 16384² takes
about 8-9 minutes on a quiet 2-core machine (estimated from the 4096² runs, 16x the pixels:
local ~65 s, 1 worker x 2 threads ~70 s, 1 x 1 ~2.5 min, 2 x 1 ~1.5 min, the 8192² memory
run 4 x ~20 s, plus four cluster starts and warm-ups); the 1 GiB uncompressed temporary and the COGs
need ~3.5 GB in the temporary folder. A quicker check: --size 4096 (16 chunks of 1024 px);
below that there are too few chunks per worker for the ratios to mean anything (1024: one
chunk, one busy worker).
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


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system), in whichever process it runs."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_rss_sampler(dask_worker) -> float:
    """Runs on a worker: sample its RSS every 20 ms from now on; returns the RSS now (MiB).

    Sampled rather than `ru_maxrss`: that high-water mark includes importing TensorFlow and
    loading the model, which can exceed what an export then needs, and would hide it."""
    import threading

    import psutil

    proc = psutil.Process()
    state = {"peak": proc.memory_info().rss, "stop": threading.Event()}

    def sample():
        while not state["stop"].wait(0.02):
            state["peak"] = max(state["peak"], proc.memory_info().rss)

    threading.Thread(target=sample, daemon=True, name="rss-sampler").start()
    dask_worker.emw_rss_sampler = state  # kept by the worker between client.run calls
    return state["peak"] / 2**20


def stop_rss_sampler(dask_worker) -> float:
    """Runs on a worker: stop sampling; the highest RSS seen since `start_rss_sampler` (MiB)."""
    state = dask_worker.emw_rss_sampler
    state["stop"].set()
    return state["peak"] / 2**20


def prediction(size: int):
    from ee_model_widgets import demo

    return demo.model("fcn").predict_image(demo.synthetic_scene(size, size, bands=("red", "nir")), cache=None)


def pre_spawn_environ(dask_malloc: bool) -> dict:
    """The environment dask sets in worker processes: its own, or without its malloc setting."""
    import dask
    import distributed  # noqa: F401 - loads distributed's config defaults

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if not dask_malloc:
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def run_cluster(
    size: int, n_workers: int, threads: int, path: str, dask_malloc: bool = False, repeats: int = 1
) -> tuple[float, list[float], float]:
    """Seconds of one export on a fresh LocalCluster, each worker's own export memory (MiB) over
    `repeats` exports in a row (the first one timed), and the CPU seconds of the first export
    (this process, with the scheduler, plus the workers)."""
    import dask
    from distributed import Client, LocalCluster

    env = {"TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    with (
        dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn_environ(dask_malloc)}),
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
        baseline = client.run(start_rss_sampler)
        pred = prediction(size)
        cpu0, workers0 = cpu_seconds(), client.run(cpu_seconds)
        t0 = time.perf_counter()
        pred.export(path, client=client, progress=False)
        seconds = time.perf_counter() - t0
        workers1 = client.run(cpu_seconds)
        cpu = cpu_seconds() - cpu0 + sum(workers1[w] - workers0.get(w, 0.0) for w in workers1)
        for _ in range(repeats - 1):
            pred.export(path, client=client, progress=False)
        peaks = client.run(stop_rss_sampler)
    return seconds, sorted(peaks[w] - baseline.get(w, 0.0) for w in peaks), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="scene side in px (default 16384)")
    parser.add_argument(
        "--dask-malloc", action="store_true", help="keep dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers"
    )
    args = parser.parse_args()
    size = args.size
    dm = args.dask_malloc
    cpus = os.cpu_count() or 1
    malloc = (
        "dask's MALLOC_TRIM_THRESHOLD_=65536" if dm else "glibc's default malloc (no MALLOC_TRIM_THRESHOLD_)"
    )
    print(
        f"scene {size}x{size} px, demo FCN, {cpus} CPUs, python {sys.version.split()[0]}; workers: {malloc}"
    )
    with tempfile.TemporaryDirectory() as d:
        local_path = os.path.join(d, "local.tif")
        prediction(512).export(os.path.join(d, "warm.tif"), progress=False, block_size=256)  # TF warm-up
        pred = prediction(size)
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        pred.export(local_path, progress=False)
        t_local = time.perf_counter() - t0
        c_local = cpu_seconds() - cpu0
        ref = sha(local_path)
        print(f"local export (threads in this process): {t_local:.1f} s, {c_local:.1f} CPU s")

        p = os.path.join(d, "c.tif")
        # CPU seconds (client with scheduler + workers) are printed too: under load they say
        # more about what the engine costs than wall-clock times do.
        t_full, _, c_full = run_cluster(size, 1, cpus, p, dm)
        assert sha(p) == ref, "1 worker x all threads wrote different bytes"
        print(f"1 worker x {cpus} threads: {t_full:.1f} s, {c_full:.1f} CPU s")
        t_one, _, c_one = run_cluster(size, 1, 1, p, dm)
        assert sha(p) == ref, "1 worker x 1 thread wrote different bytes"
        print(f"1 worker x 1 thread: {t_one:.1f} s, {c_one:.1f} CPU s")
        t_two, peaks_two, c_two = run_cluster(size, 2, 1, p, dm)
        assert sha(p) == ref, "2 workers wrote different bytes"
        print(f"2 workers x 1 thread: {t_two:.1f} s, {c_two:.1f} CPU s (identical files: True)")
        half = size // 2
        # exported 4x: as many pixels as the full size, so both peaks see the same work
        _, peaks_half, _ = run_cluster(half, 2, 1, os.path.join(d, "half.tif"), dm, repeats=4)

    a, b = t_one / t_two, t_full / t_local
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    m_half, m_big = mean(peaks_half), mean(peaks_two)
    if m_half <= 0:  # no growth measured at all: nothing to compare
        print(f"(c) n/a: the {half}^2 export did not raise the workers' RSS; use a larger --size")
        m_half = float("nan")
    print(f"(a) speed-up 2 workers vs 1 worker: {a:.2f}x (target >= 1.7); CPU seconds {c_two / c_one:.2f}")
    print(
        f"(b) 1 worker (all {cpus} threads) / local export: {b:.2f} (target <= 1.15); "
        f"CPU seconds {c_full / c_local:.2f}"
    )
    print(
        f"(c) export memory per worker (peak - just before the export): {half}^2 {m_half:.0f} MiB, "
        f"{size}^2 {m_big:.0f} MiB -> ratio {m_big / m_half:.2f} (target: flat, ~1.0)"
    )
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _figures import record

    workers = "dask's worker malloc setting" if dm else "workers without dask's MALLOC_TRIM_THRESHOLD_"
    scene = f"{size}² synthetic scene through the demo FCN to a COG, {workers}"
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
            f"Export memory per worker (RSS sampled during the export, peak - just before), {size}² / {half}² (exported 4x), 2 workers",
            f"{m_big / m_half:.2f} ({m_big:.0f} vs {m_half:.0f} MiB)",
            "~1.0 (flat)",
        )


if __name__ == "__main__":
    main()
