"""An export as tasks: chunks of the output computed by threads or on dask.distributed, written
window by window into a temporary GeoTIFF, turned into a Cloud-Optimized GeoTIFF, renamed.

One path whichever way it runs: every chunk is a task `read_chunk(image, grid, window)`
(`core/lazy.py`), which computes exactly the model cells under it in one batch with no shared
cache, so the written values are the same bit for bit with threads, one worker or many.

- Without a client, tasks run on a local thread pool (reads overlap the serialised model).
- With a `distributed.Client`, the image is pickled once by `core/portable.py` (models travel
  as their spec, never as TensorFlow objects) and sent to every worker; each worker loads
  it once, reads its own input windows and sends back its chunk. At most a few chunks per
  worker thread are in flight, so the sender's memory stays bounded; a task lost with its
  worker is rerun by the scheduler.
- The target is checked before the work (`output_file.check_target`, with the space the
  uncompressed temporary needs); the chunks are written to a hidden temporary beside it
  (uncompressed tiles: chunks land in any order without rewriting compressed blocks);
  `cog=True` then copies it with GDAL's COG driver (tiled, compressed, overviews,
  `LAYOUT=COG`) into `output_file`'s temporary, renamed to `path` at the end.
- Interrupting (Ctrl-C, `cancel.set()`, a failed task) cancels the pending tasks and removes
  the temporary, unless `resume=True`: then the windows written so far are recorded in the
  sidecar `<path>.resume.json` next to the temporary, and the next `resume=True` export of the
  same image, grid and settings skips them. The sidecar is removed when the file is complete.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor
from concurrent.futures import wait as wait_threads
from uuid import uuid4

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..errors import EEModelWidgetsError, ExportError, InputError
from .chunks import chunk_edges, windows
from .gdal_cache import bounded_block_cache
from .lazy import read_chunk
from .output_file import (
    _FULL_BYTES,
    _no_space,
    check_target,
    create_temp,
    describe_os_error,
    free_bytes,
    output_file,
    remove_leftovers,
)
from .output_file import remove_quietly as _remove
from .region import grid_for

_BLOCK = 256  # internal TIFF tile size, the COG convention
#: Chunks in flight per worker thread (one computing, one queued or travelling back).
INFLIGHT_PER_THREAD = 2
_POLL = 0.2  # seconds between checks of the cancel flag while waiting for results


class ExportCancelled(ExportError):
    """The export was cancelled (its pending tasks too); nothing was written at the target."""


def sidecar_path(path: str) -> str:
    """Where a resumable export records its finished windows."""
    return path + ".resume.json"


def export_tasks(
    image,
    path,
    region=None,
    proj=None,
    *,
    client=None,
    cog: bool = True,
    resume: bool = False,
    block_size: int | None = None,
    compress: str = "deflate",
    progress: bool = True,
    resampling=None,
    overviews: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    threads: int | None = None,
) -> str:
    """Write `image` over `region` on `proj`'s lattice to `path`; returns the path (see module doc).

    `block_size`: chunk side in px (a multiple of 256), default whole model cells (~1024 px).
    `client`: a `distributed.Client` to run the chunks on. `on_progress(done, total)` is
    called per written window; `cancel` (a `threading.Event`) stops the export when set.
    `overviews` applies to `cog=False` (a COG always has them). `threads`: local threads
    without a client (default: up to 4).
    """
    from tqdm.auto import tqdm

    path = os.path.abspath(os.fspath(path))
    if block_size is not None and (
        not isinstance(block_size, int) or block_size < _BLOCK or block_size % _BLOCK
    ):
        raise InputError(f"block_size must be a positive multiple of {_BLOCK}, got {block_size!r}.")
    compress = _check_compress(compress)
    _check_callers_objects(client, cancel, on_progress)
    if resampling is not None:
        from .resampling import resolve_resampling

        resampling = resolve_resampling(resampling)
    grid = grid_for(image, region, proj)
    _warn_if_pixels_outsize_the_image(image, grid)
    bands = image.band_names
    directory = os.path.dirname(path)
    check_target(path)  # a folder, a missing or read-only folder: refused before the work
    cols, rows = chunk_edges(image, grid, block_size)
    wins = windows(cols, rows)
    job = _job_id(image, grid, wins, cog, compress, resampling)
    side = sidecar_path(path)
    done, tmp = _resume_state(side, job, path) if resume else (set(), None)
    if not resume:
        _discard_previous(side, path)
    if tmp is None:
        check_target(path, _bytes_needed(grid, len(bands), compress, cog, overviews))
    else:
        tmp = _adopt(tmp, path)  # named after this process, so leftover cleanup spares it
    remove_leftovers(path)  # temporaries of killed exports to the same target

    profile = _profile(grid, len(bands), compress, cog)
    bar = tqdm(
        total=len(wins),
        initial=len(done),
        disable=not progress,
        desc=f"export {os.path.basename(path)}",
        unit="window",
    )
    if client is not None and progress:
        link = getattr(client, "dashboard_link", None)
        if link:
            bar.write(f"dask dashboard: {link}")
    todo = [(k, w) for k, w in enumerate(wins) if k not in done]
    finished = False
    try:
        # Inside the try: a callback that raises (or Ctrl-C) here still records an adopted
        # temporary of a resumed export in the sidecar, instead of orphaning it.
        if on_progress is not None:
            on_progress(len(done), len(wins))
        # GDAL's block cache held small: written blocks are not kept (see gdal_cache.py).
        with bounded_block_cache():
            if tmp is None:
                tmp = create_temp(path)
                mode = "w"
            else:
                mode = "r+"
            with rasterio.open(tmp, mode, **(profile if mode == "w" else {})) as dst:
                if mode == "w":
                    for i, name in enumerate(bands):
                        dst.set_band_description(i + 1, name)
                for k, block in _results(image, grid, todo, client, resampling, cancel, threads):
                    col, row, w, h = wins[k]
                    dst.write(block, window=Window(col, row, w, h))
                    done.add(k)
                    bar.update(1)
                    if on_progress is not None:
                        on_progress(len(done), len(wins))
                if not cog and overviews:
                    factors = [
                        2**k for k in range(1, 1 + int(math.log2(max(grid.width, grid.height) / _BLOCK)))
                    ]
                    if factors:
                        dst.build_overviews(factors, Resampling.average)
            if cog:
                with output_file(path) as out:
                    _to_cog(tmp, out, compress)
                _remove(tmp)
            else:
                os.replace(tmp, path)
        finished = True
        _remove(side)
    except BaseException as exc:
        # Measured before the partial file goes: a write that failed on a full disk says so.
        free = None if isinstance(exc, EEModelWidgetsError) else free_bytes(directory)
        full = free is not None and free < _FULL_BYTES
        keep = resume and tmp is not None and os.path.exists(tmp) and not finished
        if keep:
            _write_sidecar(side, job, tmp, done)
        elif tmp is not None:
            _remove(tmp)
            _remove(side)
        if isinstance(exc, (EEModelWidgetsError, KeyboardInterrupt, SystemExit, MemoryError)):
            raise
        kept = (
            f" ({len(done)} of {len(wins)} windows kept for resume=True)"
            if keep
            else " and nothing was written"
        )
        reason = _no_space(directory) if full else describe_os_error(exc, directory)
        raise ExportError(f"Export to {path} failed{kept}: {reason}") from exc
    finally:
        bar.close()
    return path


def _warn_if_pixels_outsize_the_image(image, grid) -> None:
    """Warn before the work when one output pixel is wider or taller than the whole image.

    Such a `proj` scale (a slip of units: degrees for metres, 1e6 for 10) gives a file of a
    pixel or two, each the image's value at the pixel's centre, often NaN: legal, rarely meant."""
    from .region import _to_crs

    try:
        b = _to_crs(image.grid.bounds, image.grid.crs, grid.crs)
    except Exception:  # noqa: BLE001 - an image without a bounded extent: nothing to compare
        return
    if b is None:
        return
    (px, py), (w, h) = grid.res, (b[2] - b[0], b[3] - b[1])
    if px <= w and py <= h:
        return
    hint = ""
    if image.grid.crs == grid.crs:
        own = image.grid.res
        hint = f" (the image's own pixels are {own[0]:g} x {own[1]:g}: proj=emw.Projection(crs).at_scale({own[0]:g}))"
    warnings.warn(
        f"The export's pixels ({px:g} x {py:g} in {grid.crs.to_string()} units) are larger than the whole "
        f"image ({w:g} x {h:g}): the file will be {grid.width} x {grid.height} pixel(s), each the image's "
        f"value at the pixel's centre (NaN where the centre misses the image). Give a finer scale{hint}.",
        stacklevel=5,  # the user's image.export(...) line
    )


# ---- running the chunks ------------------------------------------------------------------------
def _results(image, grid, todo, client, resampling, cancel, threads) -> Iterator[tuple[int, np.ndarray]]:
    """(window index, chunk) as the chunks finish; pending tasks are cancelled on exit."""
    if not todo:
        return
    if client is None:
        yield from _local_results(image, grid, todo, resampling, cancel, threads)
    else:
        yield from _cluster_results(image, grid, todo, client, resampling, cancel)


def _check_cancel(cancel) -> None:
    if cancel is not None and cancel.is_set():
        raise ExportCancelled("Export cancelled: the pending tasks were cancelled and nothing was written.")


def _local_results(image, grid, todo, resampling, cancel, threads):
    n = threads or min(4, os.cpu_count() or 1)
    queue = list(reversed(todo))
    pool = ThreadPoolExecutor(n, thread_name_prefix="emw-export")
    pending: dict = {}
    try:
        while queue or pending:
            while queue and len(pending) < n * INFLIGHT_PER_THREAD:
                k, (col, row, w, h) = queue.pop()
                pending[pool.submit(read_chunk, image, grid, col, row, w, h, resampling)] = k
            _check_cancel(cancel)
            ready, _ = wait_threads(list(pending), timeout=_POLL, return_when=FIRST_COMPLETED)
            for fut in ready:
                k = pending.pop(fut)
                yield k, fut.result()
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def _cluster_results(image, grid, todo, client, resampling, cancel):
    from distributed import wait as wait_cluster

    from .portable import dumps, token

    if _closed(client):
        raise ExportError(
            "Cannot export on this dask client: it is closed. Connect a new one "
            "(distributed.Client(...)) or export without client=."
        )

    blob = dumps(image)
    key = token(blob)
    # The pickled image as a task's result, not scattered data: each worker fetches it once and
    # tasks only name it, and since the scheduler keeps the task, a copy lost with its worker(s)
    # is recomputed. Scattered data lost with its last worker is gone for good: the scheduler
    # then cancels every pending chunk ("already forgotten") and the export fails.
    # (The scheduler holds the pickle; an in-memory image makes it large, on purpose: not warned.)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sending large graph")
        shared = client.submit(_pickled_image, blob, key=f"emw-image-{key}-{uuid4().hex}")
    slots = max(1, sum(client.nthreads().values())) * INFLIGHT_PER_THREAD
    queue = list(reversed(todo))
    pending: dict = {}
    try:
        while queue or pending:
            while queue and len(pending) < slots:
                k, (col, row, w, h) = queue.pop()
                fut = client.submit(
                    _remote_chunk,
                    shared,
                    key,
                    grid,
                    (col, row, w, h),
                    resampling,
                    key=f"emw-export-{k}-{uuid4().hex}",
                )
                pending[fut] = k
            _check_cancel(cancel)
            try:
                ready = wait_cluster(list(pending), timeout=_POLL, return_when="FIRST_COMPLETED").done
            except (TimeoutError, asyncio.TimeoutError):
                ready = ()
            for fut in ready:
                k = pending.pop(fut)
                yield k, fut.result()
    except Exception as exc:
        if _closed(client):  # distributed then only says "Client is closed" or "cancelled"
            raise ExportError(_CLOSED_CLIENT) from exc
        if type(exc).__name__ == "KilledWorker":  # distributed's; its text names no cause
            raise ExportError(
                f"Export failed: each worker that ran its task {exc.args[0] if exc.args else ''} died. "
                "The model crashed the worker process or the chunk ran it out of memory: give the workers "
                "more memory (memory_limit=), use a smaller block_size=, or check the workers' logs."
            ) from exc
        raise
    finally:
        if pending and not _closed(client):  # a closed client cannot cancel (its tasks went with it)
            client.cancel(list(pending))


_CLOSED_CLIENT = (
    "Export failed: the dask client was closed while the export ran, which cancelled its tasks "
    "(nothing was written at the target). Keep the client open until export() returns, then export again."
)


def _closed(client) -> bool:
    return getattr(client, "status", "running") in ("closing", "closed")


def _pickled_image(blob: bytes) -> bytes:
    """Runs on a worker: the image's pickle, as the one task every chunk depends on."""
    return blob


def _remote_chunk(blob, key, grid, window, resampling):
    """Runs on a worker: the image loaded once per process, then one chunk."""
    from .portable import load_image

    image = load_image(blob, key)
    col, row, w, h = window
    with bounded_block_cache():  # input windows are read about once: the worker stays flat
        return read_chunk(image, grid, col, row, w, h, resampling)


def _check_callers_objects(client, cancel, on_progress) -> None:
    """Refuse, before the work, a `client=` that is not a `distributed.Client` (a cluster, or the
    scheduler's address), a `cancel=` that is not an Event, an `on_progress=` that is not callable."""
    if client is not None and not (callable(getattr(client, "submit", None)) and hasattr(client, "nthreads")):
        if isinstance(client, str):
            fix = f"distributed.Client({client!r})"
        elif hasattr(client, "scheduler_address"):  # a LocalCluster, KubeCluster, SLURMCluster...
            fix = "distributed.Client(cluster)"
        else:
            fix = "a distributed.Client"
        raise InputError(
            f"client= takes a distributed.Client, got {type(client).__name__} {client!r:.80}: pass {fix}."
        )
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise InputError(
            f"cancel= takes a threading.Event (set it to stop the export), got {type(cancel).__name__}."
        )
    if on_progress is not None and not callable(on_progress):
        raise InputError(f"on_progress= takes a function f(done, total), got {type(on_progress).__name__}.")


# ---- files -------------------------------------------------------------------------------------
# GDAL codecs that can hold float32 pixels (JPEG and WEBP cannot: GDAL then writes empty
# blocks and only logs an error), for both the COG and the GTiff driver.
_COMPRESSIONS = ("deflate", "lzw", "zstd", "lzma", "lerc", "lerc_deflate", "lerc_zstd", "packbits", "none")


def _check_compress(compress) -> str:
    """The `compress` option, refused up front if GDAL would ignore it or write NaN blocks."""
    if compress is None:
        return "none"
    if not isinstance(compress, str) or compress.lower() not in _COMPRESSIONS:
        raise InputError(
            f"compress={compress!r} cannot be used: exports are float32, so compress must be one of "
            f"{list(_COMPRESSIONS)} (JPEG and WEBP hold 8-bit pixels only)."
        )
    return compress.lower()


def _profile(grid, count: int, compress: str, cog: bool) -> dict:
    profile = {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": count,
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        "tiled": True,
        "blockxsize": _BLOCK,
        "blockysize": _BLOCK,
        "BIGTIFF": "IF_SAFER",
    }
    if not cog and compress and str(compress).lower() != "none":
        profile["compress"] = compress
        if str(compress).lower() in ("deflate", "lzw", "zstd"):
            profile["predictor"] = 3  # floating-point predictor: much smaller float32 files
    return profile


def _to_cog(tmp: str, out: str, compress: str) -> None:
    """Copy the finished temporary `tmp` to `out` as a COG (`out` keeps its permissions).

    Serial, after the last window, whatever ran the chunks: GDAL writes a COG only as a copy of
    a finished dataset and recompresses every block doing so (also from an already compressed
    source), so workers cannot hand it compressed parts (see benchmarks/cluster_export.py)."""
    from rasterio.shutil import copy as gdal_copy

    mode = os.stat(out).st_mode & 0o7777
    # Blocks are compressed independently, so compressing on every core gives the same bytes.
    options = {
        "BLOCKSIZE": _BLOCK,
        "BIGTIFF": "IF_SAFER",
        "OVERVIEW_RESAMPLING": "AVERAGE",
        "NUM_THREADS": "ALL_CPUS",
    }
    if compress and str(compress).lower() != "none":
        options["COMPRESS"] = str(compress).upper()
        if str(compress).lower() in ("deflate", "lzw", "zstd"):
            options["PREDICTOR"] = "FLOATING_POINT"
    else:
        options["COMPRESS"] = "NONE"
    gdal_copy(tmp, out, driver="COG", **options)
    os.chmod(out, mode)  # GDAL may create the file anew


def _bytes_needed(grid, count: int, compress: str, cog: bool, overviews: bool) -> int | None:
    """Disk space the export needs, when known before the work (uncompressed data)."""
    raw = grid.width * grid.height * count * 4
    compressed = bool(compress) and str(compress).lower() != "none"
    if cog:  # the uncompressed temporary, plus the COG (with overviews) beside it when uncompressed
        return raw if compressed else raw + raw * 4 // 3
    return None if compressed else raw * (4 if overviews else 3) // 3


def _adopt(tmp: str, path: str) -> str:
    """An interrupted export's temporary, renamed after this process (see output_file.py)."""
    new = create_temp(path)
    os.replace(tmp, new)
    return new


def _job_id(image, grid, wins, cog, compress, resampling) -> str:
    """What must match for a resumed export to continue an earlier one."""
    from .fingerprint import image_fingerprint

    h = hashlib.blake2b(digest_size=16)
    for part in (image_fingerprint(image), grid.crs.to_wkt(), tuple(grid.transform), grid.width, grid.height):
        h.update(repr(part).encode())
    h.update(repr((wins, cog, str(compress).lower(), getattr(resampling, "name", resampling))).encode())
    return h.hexdigest()


def _resume_state(side: str, job: str, path: str) -> tuple[set[int], str | None]:
    """Windows already written by an interrupted export of the same job, and its temporary."""
    try:
        with open(side) as fh:
            state = json.load(fh)
    except (OSError, ValueError):
        return set(), None
    tmp = state.get("temp")
    ours = isinstance(tmp, str) and _is_our_temp(tmp, path)
    if state.get("job") != job or not ours or not _readable(tmp):
        _discard_previous(side, path)  # another image, grid or setting, or a damaged temporary: start over
        return set(), None
    return {int(k) for k in state.get("done", [])}, tmp


def _readable(tmp: str) -> bool:
    """Whether an interrupted export's temporary still opens (a killed process may leave it torn)."""
    try:
        with rasterio.open(tmp):
            return True
    except Exception:  # noqa: BLE001 - any GDAL/OS error means "do not reuse it"
        return False


def _is_our_temp(tmp: str, path: str) -> bool:
    folder, base = os.path.split(path)
    name = os.path.basename(tmp)
    return os.path.dirname(tmp) == folder and name.startswith(f".{base}.") and name.endswith(".tmp")


def _write_sidecar(side: str, job: str, tmp: str, done: set[int]) -> None:
    fd, part = tempfile.mkstemp(prefix=os.path.basename(side) + ".", dir=os.path.dirname(side))
    with os.fdopen(fd, "w") as fh:
        json.dump({"job": job, "temp": tmp, "done": sorted(done)}, fh)
    os.replace(part, side)


def _discard_previous(side: str, path: str) -> None:
    """Remove an earlier interrupted export's sidecar and its temporary (ours only)."""
    try:
        with open(side) as fh:
            tmp = json.load(fh).get("temp")
    except (OSError, ValueError):
        return
    if isinstance(tmp, str) and _is_our_temp(tmp, path):
        _remove(tmp)
    _remove(side)
