"""Exports on dask.distributed: scaling with worker processes, engine overhead, memory per worker.

The demo FCN (three 3x3 convolutions, 16 filters) predicts a lazy synthetic scene of
--size x --size px, exported to a Cloud-Optimized GeoTIFF by `pred.export`:

(a) 1 vs 2 worker processes of 1 thread each (LocalCluster, TensorFlow limited to the
    worker's thread, the dask convention of one thread per core): target >= 1.7x on 2 cores.
    Each run is split into the windows (computed on the workers, streamed back and written)
    and the end (GDAL's COG copy of the finished temporary, with its overviews, in this
    process: it can only start after the last window and is as long with 1 worker as with 2).
    The demo FCN is light: about 40% of a chunk's CPU, the rest being the synthetic scene's
    generation (memory-bound numpy, printed per chunk first). (a) is therefore also measured
    with a compute-bound FCN (64 filters, ~14x the demo FCN's multiply-adds per pixel, ~85%
    of a chunk's CPU) on a --compute-bound-size scene (default: the --size scene);
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
run 4 x ~20 s, plus four cluster starts and warm-ups), and the compute-bound model's
4096² runs about a minute more (1 x 1 ~30 s, 2 x 1 ~16 s, two cluster starts); the 1 GiB uncompressed temporary and the COGs
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


def prediction(size: int, model_path: str | None = None):
    """The demo FCN's prediction of a lazy synthetic scene, or that of the model at `model_path`."""
    from ee_model_widgets import demo
    from ee_model_widgets.core.model import Model

    scene = demo.synthetic_scene(size, size, bands=("red", "nir"))
    if model_path is None:
        return demo.model("fcn").predict_image(scene, cache=None)
    model = Model.from_keras(
        model_path,
        input_tile_size=[128, 128],
        input_overlap_size=[8, 8],
        output_bands={"score": {"type": "float"}},
    )
    return model.predict_image(scene, cache=None)


def build_compute_bound_model(path: str, filters: int = 64) -> str:
    """Save a wider fully-convolutional net (2 -> filters -> filters -> 1, 3x3 convolutions,
    fixed seeds) to `path`: ~14x the demo FCN's multiply-adds per pixel, so the model and not the
    synthetic scene's generation (memory-bound numpy) dominates a chunk."""
    import keras

    layers = keras.layers
    inputs = {n: keras.Input(shape=(None, None, 1), name=n) for n in ("red", "nir")}
    x = layers.Concatenate(axis=-1)([inputs["red"], inputs["nir"]])
    x = layers.Rescaling(1e-4)(x)
    x = layers.ZeroPadding2D(3)(x)  # three 3x3 "valid" convolutions: the output keeps the input's size
    for seed in (1, 2):
        init = keras.initializers.GlorotUniform(seed=seed)
        x = layers.Conv2D(filters, 3, padding="valid", activation="relu", kernel_initializer=init)(x)
    out = layers.Conv2D(
        1, 3, padding="valid", name="score", kernel_initializer=keras.initializers.GlorotUniform(seed=3)
    )(x)
    keras.Model(inputs, out, name="compute_bound_fcn").save(path)
    return path


def chunk_cpu_split(pred, n: int = 4) -> tuple[float, float]:
    """CPU seconds per full chunk in this process: the whole chunk, and the synthetic scene's
    generation alone for the chunk's input window (its cells' overlap margin included); the
    difference is the model and the tiling around it."""
    from ee_model_widgets.core.chunks import chunk_edges, windows
    from ee_model_widgets.core.lazy import read_chunk
    from ee_model_widgets.core.region import grid_for

    grid = grid_for(pred, None, None)
    wins = windows(*chunk_edges(pred, grid))
    biggest = max(w * h for _, _, w, h in wins)
    full = [win for win in wins if win[2] * win[3] == biggest][:n]
    read_chunk(pred, grid, *full[0], None)  # warm-up
    c0 = cpu_seconds()
    for win in full:
        read_chunk(pred, grid, *win, None)
    chunk = (cpu_seconds() - c0) / len(full)
    from ee_model_widgets import demo

    scene = demo.synthetic_scene(grid.width, grid.height, bands=("red", "nir"))
    margin = 8  # the models' input_overlap_size
    c0 = cpu_seconds()
    for col, row, w, h in full:
        scene.read(scene.grid.window(col - margin, row - margin, w + 2 * margin, h + 2 * margin))
    return chunk, (cpu_seconds() - c0) / len(full)


def pre_spawn_environ(dask_malloc: bool) -> dict:
    """The environment dask sets in worker processes: its own, or without its malloc setting."""
    import dask
    import distributed  # noqa: F401 - loads distributed's config defaults

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    if not dask_malloc:
        environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    return environ


def run_cluster(
    size: int,
    n_workers: int,
    threads: int,
    path: str,
    dask_malloc: bool = False,
    repeats: int = 1,
    model_path: str | None = None,
) -> tuple[float, list[float], float, float]:
    """Seconds of one export on a fresh LocalCluster, each worker's own export memory (MiB) over
    `repeats` exports in a row (the first one timed), the CPU seconds of the first export
    (this process, with the scheduler, plus the workers), and the seconds of its end after the
    last window was written (the COG copy with its overviews, in this process)."""
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
        pred = prediction(size, model_path)
        written: list[float] = []

        def on_progress(done: int, total: int) -> None:
            if done == total:
                written.append(time.perf_counter())

        cpu0, workers0 = cpu_seconds(), client.run(cpu_seconds)
        t0 = time.perf_counter()
        pred.export(path, client=client, progress=False, on_progress=on_progress)
        t1 = time.perf_counter()
        seconds = t1 - t0
        workers1 = client.run(cpu_seconds)
        cpu = cpu_seconds() - cpu0 + sum(workers1[w] - workers0.get(w, 0.0) for w in workers1)
        for _ in range(repeats - 1):
            pred.export(path, client=client, progress=False)
        peaks = client.run(stop_rss_sampler)
    return seconds, sorted(peaks[w] - baseline.get(w, 0.0) for w in peaks), cpu, t1 - written[-1]


def split(label: str, seconds: float, cpu: float, finalise: float) -> str:
    return (
        f"{label}: {seconds:.1f} s = windows computed and written {seconds - finalise:.1f} s + COG copy "
        f"with overviews {finalise:.1f} s; {cpu:.1f} CPU s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16384, help="scene side in px (default 16384)")
    parser.add_argument(
        "--compute-bound-size",
        type=int,
        default=None,
        help="scene side of (a) with the compute-bound model (default: --size, as the issue asks; 0 skips it)",
    )
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
        heavy = build_compute_bound_model(os.path.join(d, "compute_bound.keras"))
        for name, model_path in (("demo FCN", None), ("compute-bound FCN", heavy)):
            chunk, scene = chunk_cpu_split(prediction(4096, model_path))
            print(
                f"one chunk, {name}: {chunk:.2f} CPU s, of which the synthetic scene's generation "
                f"{scene:.2f} ({scene / chunk:.0%}) and the model with its tiling {chunk - scene:.2f} "
                f"({1 - scene / chunk:.0%})"
            )
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
        t_full, _, c_full, f_full = run_cluster(size, 1, cpus, p, dm)
        assert sha(p) == ref, "1 worker x all threads wrote different bytes"
        print(split(f"1 worker x {cpus} threads", t_full, c_full, f_full))
        t_one, _, c_one, f_one = run_cluster(size, 1, 1, p, dm)
        assert sha(p) == ref, "1 worker x 1 thread wrote different bytes"
        print(split("1 worker x 1 thread", t_one, c_one, f_one))
        t_two, peaks_two, c_two, f_two = run_cluster(size, 2, 1, p, dm)
        assert sha(p) == ref, "2 workers wrote different bytes"
        print(split("2 workers x 1 thread", t_two, c_two, f_two) + " (identical files: True)")
        half = size // 2
        # exported 4x: as many pixels as the full size, so both peaks see the same work
        _, peaks_half, _, _ = run_cluster(half, 2, 1, os.path.join(d, "half.tif"), dm, repeats=4)
        hs = size if args.compute_bound_size is None else args.compute_bound_size
        if hs:
            print(f"compute-bound FCN, scene {hs}x{hs} px:")
            h_one, _, hc_one, hf_one = run_cluster(hs, 1, 1, p, dm, model_path=heavy)
            h_ref = sha(p)
            print(split("  1 worker x 1 thread", h_one, hc_one, hf_one))
            h_two, _, hc_two, hf_two = run_cluster(hs, 2, 1, p, dm, model_path=heavy)
            assert sha(p) == h_ref, "compute-bound model: 2 workers wrote different bytes than 1"
            print(split("  2 workers x 1 thread", h_two, hc_two, hf_two) + " (identical files: True)")

    a, b = t_one / t_two, t_full / t_local
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    m_half, m_big = mean(peaks_half), mean(peaks_two)
    if m_half <= 0:  # no growth measured at all: nothing to compare
        print(f"(c) n/a: the {half}^2 export did not raise the workers' RSS; use a larger --size")
        m_half = float("nan")
    # The COG copy runs in this process after the last window, on 1 or 2 workers alike: the
    # ratio of the parts before it says how the chunks themselves scale.
    a_windows = (t_one - f_one) / (t_two - f_two)
    print(
        f"(a) speed-up 2 workers vs 1 worker: {a:.2f}x (target >= 1.7); CPU seconds {c_two / c_one:.2f}; "
        f"the windows alone (without the final COG copy): {a_windows:.2f}x"
    )
    if hs:
        a_heavy = h_one / h_two
        print(
            f"(a) with the compute-bound FCN at {hs}^2: {a_heavy:.2f}x; the windows alone "
            f"{(h_one - hf_one) / (h_two - hf_two):.2f}x"
        )
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
    if hs:
        record(
            "cluster_export.a_compute_bound",
            f"Export on 2 / 1 worker processes (LocalCluster), {hs}² synthetic scene through a "
            f"compute-bound FCN (64 filters, ~14x the demo FCN's multiply-adds per pixel) to a COG, {workers}",
            f"{a_heavy:.2f}x",
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
