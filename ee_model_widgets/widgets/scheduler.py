"""The kernel-side tile scheduler: a bounded queue, coalescing workers, cancellation.

Comm handlers only call `submit`/`cancel`/`set_zoom` (cheap, never blocking); worker
threads take the requests that arrived together (up to `batch_size`) and render them in one
call, so a viewport of tiles becomes a few batched model calls instead of one call per tile.

A batch that has started cannot be cancelled, so while the user pans, every tile of a long
batch that scrolls out of view is wasted work. Batches are therefore sized to take about
`batch_seconds` at the recently measured time per tile (starting at 2 tiles): a loaded
machine or a heavy model gets smaller batches, which newer (visible) requests and
cancellations can overtake. Only where the time grows with the tiles, though: recent batches
are fitted as fixed + per_tile x tiles, and where the fixed part dominates (a REST model's
round trip) smaller batches would only cost throughput, so batches stay full.

Nothing here imports the widget stack, so it is unit-tested on its own.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass
class TileRequest:
    id: str
    z: int
    x: int
    y: int
    queued_at: float = field(default_factory=time.monotonic)
    #: Set when the browser cancels a request that a worker already took: a renderer checks
    #: it right before expensive work (the model call) and answers `CANCELLED` instead.
    cancelled: bool = False


#: What a renderer returns for a request that was cancelled after it was taken: no reply is sent.
CANCELLED = object()


# render_many(requests) -> one result per request: PNG bytes, or an exception for that tile.
RenderMany = Callable[[Sequence[TileRequest]], Sequence["bytes | BaseException"]]
# reply(request, result) -> sends the result to the browser.
Reply = Callable[[TileRequest, "bytes | BaseException"], None]


class TileScheduler:
    """Queue tile requests and render them in coalesced batches on a small worker pool."""

    def __init__(
        self,
        render_many: RenderMany,
        reply: Reply,
        *,
        workers: int = 2,
        batch_size: int = 8,
        max_queued: int = 256,
        linger: float = 0.005,
        batch_seconds: float | None = 0.25,
        on_change: Callable[[], None] | None = None,
    ):
        self._render_many = render_many
        self._reply = reply
        self.batch_size = max(1, int(batch_size))
        # ~Leaflet's updateInterval (200 ms): a pan asks for new tiles about that often
        self.batch_seconds = batch_seconds
        self._timings: collections.deque[tuple[int, float]] = collections.deque(maxlen=16)
        self.max_queued = max(1, int(max_queued))
        self.linger = linger
        self._on_change = on_change or (lambda: None)
        self._lock = threading.Condition()
        self._queue: collections.OrderedDict[str, TileRequest] = collections.OrderedDict()
        self._running: dict[str, TileRequest] = {}
        self._zoom: int | None = None
        self._closed = False
        self._done_times: collections.deque[float] = collections.deque(maxlen=512)
        self.counts = {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
        self._threads = [
            threading.Thread(target=self._work, name=f"emw-tiles-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for t in self._threads:
            t.start()

    # ---- called from comm handlers (any thread) ---------------------------------------
    def submit(self, request: TileRequest) -> None:
        with self._lock:
            if self._closed:
                return
            if self._zoom is not None and request.z != self._zoom:
                # The view has moved on to another zoom: Leaflet only asks for tiles of the
                # zoom it shows, so a stale request is a late message; drop it.
                self.counts["cancelled"] += 1
            else:
                self._queue[request.id] = request
                while len(self._queue) > self.max_queued:  # bounded: the oldest give way
                    self._queue.popitem(last=False)
                    self.counts["cancelled"] += 1
                self._lock.notify()
            self.counts["queued"] = len(self._queue)
        self._on_change()

    def cancel(self, request_id: str) -> bool:
        """Drop a queued request. Returns False when it already started: it is then only
        flagged, so the renderer can still skip it before the model call."""
        with self._lock:
            dropped = self._queue.pop(request_id, None) is not None
            if dropped:
                self.counts["cancelled"] += 1
                self.counts["queued"] = len(self._queue)
            elif request_id in self._running:
                self._running[request_id].cancelled = True
        if dropped:
            self._on_change()
        return dropped

    def set_zoom(self, z: int) -> None:
        """The map settled on zoom `z`: queued requests of other zooms will never be shown."""
        with self._lock:
            self._zoom = int(z)
            stale = [rid for rid, r in self._queue.items() if r.z != self._zoom]
            for rid in stale:
                del self._queue[rid]
            self.counts["cancelled"] += len(stale)
            self.counts["queued"] = len(self._queue)
        if stale:
            self._on_change()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.counts["cancelled"] += len(self._queue)
            self._queue.clear()
            self.counts["queued"] = 0
            self._lock.notify_all()

    @property
    def tiles_per_second(self) -> float:
        """Completed tiles per second over the last few seconds of activity."""
        with self._lock:
            now = time.monotonic()
            recent = [t for t in self._done_times if now - t <= 5.0]
        if len(recent) < 2:
            return float(len(recent))
        span = max(now - recent[0], 1e-3)
        return len(recent) / span

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    # ---- workers ------------------------------------------------------------------------
    def _take_batch(self) -> list[TileRequest] | None:
        with self._lock:
            while not self._queue and not self._closed:
                self._lock.wait()
            if self._closed:
                return None
        if self.linger:
            time.sleep(self.linger)  # let the rest of a burst arrive, so it shares a batch
        with self._lock:
            # Newest first: while the user pans, the latest requests are the tiles on screen and
            # the oldest are the likeliest to be cancelled. A batch keeps its arrival order.
            batch = []
            size = self._next_batch_size()
            while self._queue and len(batch) < size:
                batch.append(self._queue.popitem(last=True)[1])
            batch.reverse()
            self._running.update((r.id, r) for r in batch)
            self.counts["running"] += len(batch)
            self.counts["queued"] = len(self._queue)
            return batch

    def _next_batch_size(self) -> int:
        with self._lock:
            timings = list(self._timings)
        if not self.batch_seconds:
            return self.batch_size
        if not timings:
            # Start small: the first tiles show sooner, and a loaded machine does not begin
            # with two full batches it cannot cancel (they caused most of the waste in a pan).
            return min(self.batch_size, 2)
        fixed, per_tile = batch_cost(timings)
        if per_tile * self.batch_size < fixed:
            return self.batch_size  # latency-bound: fewer tiles would not finish much sooner
        recent = timings[-4:]  # react within a few batches when the machine gets busy
        seconds_per_tile = sum(s for _, s in recent) / sum(n for n, _ in recent)
        return max(1, min(self.batch_size, int(self.batch_seconds / seconds_per_tile)))

    def _measured(self, seconds: float, tiles: int) -> None:
        with self._lock:
            self._timings.append((tiles, seconds))

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if not batch:
                continue
            self._on_change()
            started = time.monotonic()
            try:
                results = list(self._render_many(batch))
                if len(results) != len(batch):
                    raise RuntimeError(f"renderer returned {len(results)} results for {len(batch)} tiles")
            except BaseException as exc:  # noqa: BLE001 - a failing renderer must not kill the worker
                results = [exc] * len(batch)
            rendered = sum(r is not CANCELLED for r in results)
            if rendered:  # skipped tiles cost nothing and say nothing about the tiles' cost
                self._measured(time.monotonic() - started, rendered)
            # Count first, publish, then reply: whoever sees a tile arrive already sees it counted.
            with self._lock:
                for request, result in zip(batch, results):
                    if result is CANCELLED:
                        outcome = "cancelled"
                    else:
                        ok = isinstance(result, (bytes, bytearray)) and bytes(result[:8]) == PNG_SIGNATURE
                        outcome = "done" if ok else "failed"
                        self._done_times.append(time.monotonic())
                    self._running.pop(request.id, None)
                    self.counts["running"] -= 1
                    self.counts[outcome] += 1
            self._on_change()
            for request, result in zip(batch, results):
                if result is not CANCELLED:
                    try:
                        self._reply(request, result)
                    except Exception:  # noqa: BLE001 - e.g. the comm closed while we rendered
                        log.warning("could not send tile %s", request.id, exc_info=True)


def batch_cost(timings: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares `seconds = fixed + per_tile * tiles` over (tiles, seconds) of past batches,
    both terms >= 0. With a single batch size seen, all of the time is charged per tile (the
    cautious reading: it shrinks the next batch, and the fit then sees two sizes)."""
    n = np.array([t for t, _ in timings], dtype=float)
    secs = np.array([s for _, s in timings], dtype=float)
    if np.ptp(n) == 0:
        return 0.0, float(secs.sum() / n.sum())
    per_tile = float(np.cov(n, secs, bias=True)[0, 1] / np.var(n))
    if per_tile <= 0:  # time does not grow with the batch: latency-bound
        return float(secs.mean()), 0.0
    fixed = float(secs.mean() - per_tile * n.mean())
    if fixed < 0:
        return 0.0, float(secs.sum() / n.sum())
    return fixed, per_tile
