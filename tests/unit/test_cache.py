"""CellCache: bytes bound, LRU order, counters, thread safety, the process-wide instance."""

from __future__ import annotations

import numpy as np
import pytest

from ee_model_widgets.core import cache as cache_mod
from ee_model_widgets.core.cache import CellCache
from ee_model_widgets.errors import InputError
from tests.helpers import run_in_threads


def arr(n_floats: int, value: float = 0.0) -> np.ndarray:
    return np.full(n_floats, value, np.float32)


def test_get_put_and_counters():
    c = CellCache(1000)
    assert c.get("a") is None
    assert c.put("a", arr(10, 1.0))
    np.testing.assert_array_equal(c.get("a"), arr(10, 1.0))
    assert (c.hits, c.misses) == (1, 1)
    assert c.nbytes == 40 and len(c) == 1 and "a" in c


def test_evicts_least_recently_used_to_stay_within_bytes():
    c = CellCache(100)  # room for 2 arrays of 40 bytes
    c.put("a", arr(10))
    c.put("b", arr(10))
    c.get("a")  # a is now most recent
    c.put("c", arr(10))
    assert "b" not in c and "a" in c and "c" in c
    assert c.nbytes == 80 and c.evictions == 1


def test_too_large_item_is_not_stored():
    c = CellCache(16)
    assert not c.put("big", arr(10))
    assert len(c) == 0


def test_replacing_a_key_keeps_byte_count_right():
    c = CellCache(1000)
    c.put("a", arr(10))
    c.put("a", arr(20))
    assert c.nbytes == 80 and len(c) == 1


def test_stored_arrays_are_read_only_copies_of_views():
    c = CellCache(10_000)
    base = np.zeros((4, 100), np.float32)
    c.put("row", base[1])
    got = c.get("row")
    assert got.base is None or got.base is not base
    with pytest.raises(ValueError):
        got[0] = 1


def test_clear_and_resize():
    c = CellCache(1000)
    for k in range(5):
        c.put(k, arr(10))
    c.resize(100)
    assert c.nbytes <= 100 and len(c) == 2
    c.clear()
    assert len(c) == 0 and c.stats() == {
        "hits": 0,
        "misses": 0,
        "evictions": 0,
        "entries": 0,
        "bytes": 0,
        "max_bytes": 100,
    }


def test_bad_size():
    with pytest.raises(InputError, match="non-negative integer"):
        CellCache(-1)


def test_concurrent_use_keeps_the_bound_and_the_counts():
    c = CellCache(40 * 50)
    n_threads, n_ops = 8, 500

    def work(t):
        for k in range(n_ops):
            key = (t, k % 80)
            if c.get(key) is None:
                c.put(key, arr(10))

    run_in_threads(work, n_threads)
    s = c.stats()
    assert s["hits"] + s["misses"] == n_threads * n_ops
    assert s["bytes"] == 40 * s["entries"] <= 40 * 50


def test_default_cache_is_one_instance_and_env_sets_its_size(monkeypatch):
    monkeypatch.setattr(cache_mod, "_default", None)
    monkeypatch.setenv("EE_MODEL_WIDGETS_CACHE_MB", "2")
    d = cache_mod.default_cache()
    assert d is cache_mod.default_cache()
    assert d.max_bytes == 2 * 1024 * 1024
    d.put("x", arr(4))
    cache_mod.clear()
    assert len(d) == 0
    monkeypatch.setattr(cache_mod, "_default", None)
    monkeypatch.setenv("EE_MODEL_WIDGETS_CACHE_MB", "lots")
    with pytest.raises(InputError, match="EE_MODEL_WIDGETS_CACHE_MB='lots'"):
        cache_mod.default_cache()
    monkeypatch.setattr(cache_mod, "_default", None)
