"""`CellCache`: a bytes-bounded, thread-safe LRU of predicted model cells.

Keys are tuples (model fingerprint, params fingerprint, image fingerprint, lattice key,
cell index); values are numpy arrays (a cell's output bands, NaN = masked). Panning back
over a map area, re-exporting, or reading the same cell at another zoom with
`fix_input_proj=True` then costs no model call. One process-wide instance
(`default_cache()`, 512 MiB unless `EE_MODEL_WIDGETS_CACHE_MB` says otherwise) is shared by
every predicted image that does not bring its own.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

from ..errors import InputError

DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


class CellCache:
    """LRU mapping key -> numpy array, bounded by the arrays' total `nbytes`.

    Thread-safe: every operation holds one lock (operations are O(1) dict moves). Arrays
    are stored read-only so a caller cannot corrupt what another will read.
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise InputError(f"CellCache max_bytes must be a non-negative integer, got {max_bytes!r}.")
        self.max_bytes = int(max_bytes)
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def get(self, key: Hashable) -> np.ndarray | None:
        """The cached array (now most recently used), or None; counts a hit or a miss."""
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: Hashable, value: np.ndarray) -> bool:
        """Store `value` (evicting least recently used entries); False if it is larger than the cache."""
        size = int(value.nbytes)
        if size > self.max_bytes:
            return False
        if not value.flags.owndata:  # a view would keep its whole base array alive
            value = value.copy()
        value.flags.writeable = False
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._data[key] = value
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1
        return True

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes currently held."""
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._data.clear()
            self._bytes = 0
            self.hits = self.misses = self.evictions = 0

    def resize(self, max_bytes: int) -> None:
        """Change the bound, evicting as needed."""
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
            raise InputError(f"CellCache max_bytes must be a non-negative integer, got {max_bytes!r}.")
        with self._lock:
            self.max_bytes = int(max_bytes)
            while self._bytes > self.max_bytes and self._data:
                _, evicted = self._data.popitem(last=False)
                self._bytes -= evicted.nbytes
                self.evictions += 1

    def stats(self) -> dict[str, int]:
        """{"hits", "misses", "evictions", "entries", "bytes", "max_bytes"}."""
        with self._lock:
            return {
                "hits": self.hits,
                "misses": self.misses,
                "evictions": self.evictions,
                "entries": len(self._data),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
            }

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"CellCache({s['entries']} cells, {s['bytes'] / 2**20:.1f}/{s['max_bytes'] / 2**20:.0f} MiB, "
            f"hits={s['hits']}, misses={s['misses']})"
        )


_default: CellCache | None = None
_default_lock = threading.Lock()


def _default_size() -> int:
    env = os.environ.get("EE_MODEL_WIDGETS_CACHE_MB")
    if env:
        try:
            return int(float(env) * 1024 * 1024)
        except ValueError:
            raise InputError(
                f"EE_MODEL_WIDGETS_CACHE_MB={env!r} is not a number of MiB: set e.g. 512, or unset it."
            ) from None
    return DEFAULT_CACHE_BYTES


def default_cache() -> CellCache:
    """The process-wide cell cache (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = CellCache(_default_size())
        return _default


def clear() -> None:
    """Empty the process-wide cell cache."""
    default_cache().clear()
