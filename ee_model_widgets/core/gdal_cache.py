"""GDAL's block cache held small while an export runs, so its memory does not grow with the file.

GDAL keeps the raster blocks a process reads and writes in one process-wide cache, by
default 5% of the RAM (GDAL_CACHEMAX). An export writes each block of its output once (the
uncompressed temporary) and reads it once more (the COG copy and its overviews): a cache
gains nothing there, yet it keeps up to 5% of the RAM of written blocks, so the export's
memory grew with the output (the whole 256 MiB of an 8192² float32 band fit on a 24 GB
machine). `bounded_block_cache` lowers the limit for as long as any export of the process
runs (GDAL writes dirty blocks out and drops clean ones when the cache is full) and puts the
previous limit back when the last one ends. Measured on an 8192² export of the demo FCN:
the export's own memory went from 480-515 to ~300 MiB (what a 2048² one needs), and
writing plus COG-copying an 8192² band took as long with 32 MiB as with GDAL's default.

The limit is process-wide (GDAL has no per-dataset cache), so reads by other threads during
an export (the map's source GeoTIFF) share the small cache; it is only ever lowered, never
raised above what the user set. rasterio's own `Env(GDAL_CACHEMAX=...)` would not do:
nested in a user's `Env` it leaves the lowered limit behind, and two exports in two threads
can restore each other's value.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Block cache limit while exporting: a few windows of blocks (a 1024² float32 window of
#: one band is 4 MiB), small against the model's working memory.
EXPORT_CACHE_BYTES = 32 * 1024 * 1024

_lock = threading.Lock()
_users = 0
_saved: int | None = None


def _get() -> int:
    from rasterio.env import get_gdal_config

    return int(get_gdal_config("GDAL_CACHEMAX"))  # rasterio reads GDALGetCacheMax64 (bytes)


def _set(nbytes: int) -> None:
    from rasterio.env import set_gdal_config

    set_gdal_config("GDAL_CACHEMAX", int(nbytes))  # rasterio calls GDALSetCacheMax64 (bytes)


@contextmanager
def bounded_block_cache(max_bytes: int = EXPORT_CACHE_BYTES) -> Iterator[None]:
    """Hold GDAL's block cache at most `max_bytes` inside the block (re-entrant, thread-safe)."""
    global _users, _saved
    with _lock:
        if _users == 0:
            current = _get()
            _saved = current if current > max_bytes else None
            if _saved is not None:
                _set(max_bytes)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0 and _saved is not None:
                _set(_saved)
                _saved = None
