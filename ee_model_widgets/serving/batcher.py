"""Server-side batching: concurrent predict requests become one model call.

A map pans, a notebook exports, a room of workshop laptops all send small requests at once; a
model is far cheaper per tile on one batch of 16 than on 16 batches of 1. One worker thread owns
the model: it takes the oldest queued request, adds every compatible request already queued
(same signature, same per-instance shapes and dtypes) and waits `window_s` (a few ms) for more,
up to `max_batch_size` instances, runs the model once and hands each caller its rows back.
Requests that cannot share a batch wait for the next round in arrival order. If a shared call
fails, each request is retried alone so that one bad request cannot fail its neighbours. The
queue is bounded: when it is full, `submit` raises `ServerBusy` (the server answers 503).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError, ServingError
from .servable import Signature


class ServerBusy(ServingError):
    """The batch queue is full; the client should retry later (HTTP 503)."""


@dataclass
class _Item:
    sig: Signature
    feeds: dict[str, np.ndarray]
    n: int
    future: Future = field(default_factory=Future)

    def key(self):
        return (self.sig.name, tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(self.feeds.items())))


_STOP = object()


class Batcher:
    """Runs a servable's signatures from one worker thread, batching compatible requests."""

    def __init__(self, max_batch_size: int = 64, window_s: float = 0.002, max_queue: int = 512):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"model_calls": 0, "instances": 0, "largest_batch": 0}
        self._thread = threading.Thread(target=self._loop, name="ee-model-batcher", daemon=True)
        self._thread.start()

    def submit(self, sig: Signature, feeds: Mapping[str, np.ndarray]) -> Future:
        """Queue one request; the future resolves to its outputs (dict name -> array)."""
        feeds = dict(feeds)
        n = len(next(iter(feeds.values())))
        item = _Item(sig, feeds, n)
        if self._closed:
            raise ServingError("The server is shutting down.")
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise ServerBusy(
                f"The server is busy ({self._queue.maxsize} requests queued); retry in a moment."
            ) from None
        return item.future

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the worker."""
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # ---- worker ---------------------------------------------------------------------------
    def _loop(self) -> None:
        pending: deque[_Item] = deque()
        stopping = False
        while True:
            if pending:
                first = pending.popleft()
            elif stopping:
                return
            else:
                first = self._queue.get()
                if first is _STOP:
                    return
            batch, n, key = [first], first.n, first.key()
            # compatible requests that waited for an earlier, different batch go first
            for item in list(pending):
                if n + item.n <= self.max_batch_size and item.key() == key:
                    pending.remove(item)
                    batch.append(item)
                    n += item.n
            deadline = time.monotonic() + self.window_s
            while n < self.max_batch_size and not stopping:
                remaining = deadline - time.monotonic()
                try:
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                if item.key() == key and n + item.n <= self.max_batch_size:
                    batch.append(item)
                    n += item.n
                else:
                    pending.append(item)
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        live = [it for it in batch if it.future.set_running_or_notify_cancel()]
        if not live:
            return
        if len(live) > 1:
            try:
                feeds = {k: np.concatenate([it.feeds[k] for it in live]) for k in live[0].feeds}
                outputs = self._call(live[0].sig, feeds, sum(it.n for it in live))
                self._split(live, outputs)
                return
            except Exception:  # noqa: BLE001 - isolate the faulty request below
                pass
        for it in live:
            try:
                it.future.set_result(self._call(it.sig, it.feeds, it.n))
            except Exception as exc:  # noqa: BLE001 - the handler turns it into an HTTP error
                it.future.set_exception(exc)

    def _call(self, sig: Signature, feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        outputs = sig.run(feeds)
        with self._lock:
            self.stats["model_calls"] += 1
            self.stats["instances"] += n
            self.stats["largest_batch"] = max(self.stats["largest_batch"], n)
        return outputs

    @staticmethod
    def _split(items: list[_Item], outputs: dict[str, np.ndarray]) -> None:
        total = sum(it.n for it in items)
        for name, arr in outputs.items():
            if np.ndim(arr) == 0 or len(arr) != total:
                raise ModelError(
                    f"Output '{name}' has no batch axis of {total} rows; cannot split a shared batch."
                )
        start = 0
        for it in items:
            it.future.set_result({k: v[start : start + it.n] for k, v in outputs.items()})
            start += it.n
