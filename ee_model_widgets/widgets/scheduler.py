"""The kernel-side tile scheduler: a bounded queue, coalescing workers, cancellation.

Comm handlers only call `submit`/`cancel`/`held` (cheap, never blocking); worker
threads take the requests that arrived together (up to `batch_size`) and render them in one
call, so a viewport of tiles becomes a few batched model calls instead of one call per tile.

A batch that has started cannot be cancelled, so while the user pans, every tile of a long
batch that scrolls out of view is wasted work. Batches are therefore sized to take about
`batch_seconds` at the recently measured time per tile (starting at 2 tiles): a loaded
machine or a heavy model gets smaller batches, which newer (visible) requests and
cancellations can overtake. Only where the time grows with the tiles, though: recent batches
are fitted as fixed + per_tile x tiles, and where the fixed part dominates (a REST model's
round trip) smaller batches would only cost throughput, so batches stay full.

Every request gets exactly one answer: a rendered tile, an error (also a request that is
not a tile of the world, answered at once and never put into a batch), or a `Refusal`
when the scheduler drops it (full queue, a zoom the map has left); only requests the
browser cancelled itself go unanswered. A model call that hangs cannot wedge the layer: a
watchdog abandons a batch that runs longer than `batch_timeout` (its tiles become error
tiles) and `restart()` (the image changed) abandons every batch in flight and queues its
requests again; either way a fresh worker thread takes over, and the abandoned call's
results are thrown away whenever it returns (Python cannot stop a running thread).

Nothing here imports the widget stack, so it is unit-tested on its own.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError, ModelError
from .tile_payload import PNG_SIGNATURE, is_tile  # noqa: F401 - PNG_SIGNATURE: still importable from here

log = logging.getLogger(__name__)


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

#: Deepest zoom a tile request may ask for (EPSG:3857 pixels are ~0.15 mm there).
MAX_ZOOM = 30


@dataclass(frozen=True)
class Refusal:
    """The answer to a request the scheduler dropped unrendered (a full queue, a zoom the map
    left): sent as a 'cancelled' reply so the browser never waits for a tile that won't come."""

    reason: str


QUEUE_FULL = Refusal("Dropped: too many tiles were waiting in the kernel. Pan or zoom to ask again.")


def tile_error(z: int, x: int, y: int) -> InputError | None:
    """Why z/x/y is not a slippy-map tile of the world, or None if it is one."""
    if not 0 <= z <= MAX_ZOOM:
        return InputError(f"Tile {z}/{x}/{y} does not exist: the zoom must be 0..{MAX_ZOOM}.")
    n = 2**z
    if not (0 <= x < n and 0 <= y < n):
        return InputError(
            f"Tile {z}/{x}/{y} is outside the world: at zoom {z}, x and y run from 0 to {n - 1}."
        )
    return None


@dataclass(eq=False)
class _Batch:
    """Requests one worker renders in one call; `abandoned` says why it no longer counts."""

    requests: list[TileRequest]
    generation: int
    started: float = field(default_factory=time.monotonic)
    abandoned: str | None = None  # "timeout" or "restart"


# render_many(requests) -> one result per request: PNG bytes, or an exception for that tile.
RenderMany = Callable[[Sequence[TileRequest]], Sequence["bytes | BaseException"]]
# reply(request, result) -> sends the result to the browser (a Refusal: a 'cancelled' reply).
Reply = Callable[[TileRequest, "bytes | BaseException | Refusal"], None]


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
        batch_timeout: float | None = None,
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
        mutex = threading.RLock()
        self._lock = threading.Condition(mutex)  # workers wait on it for requests
        self._watch_cond = threading.Condition(mutex)  # the watchdog waits on it for deadlines
        self._queue: collections.OrderedDict[str, TileRequest] = collections.OrderedDict()
        self._running: dict[str, TileRequest] = {}
        self._active: set[_Batch] = set()
        self._generation = 0
        # Timed-out calls of this generation still running: at `max_hung` the model is not
        # called again until one returns, so a model that always hangs cannot pile up threads.
        self._hung = 0
        self.max_hung = max(1, workers)
        self._batch_timeout = batch_timeout
        self._closed = False
        self._done_times: collections.deque[float] = collections.deque(maxlen=512)
        self.counts = {"queued": 0, "running": 0, "done": 0, "failed": 0, "cancelled": 0}
        self._spawned = 0
        for _ in range(max(1, workers)):
            self._spawn_worker()
        threading.Thread(target=self._watch, name="emw-tiles-watchdog", daemon=True).start()

    def _spawn_worker(self) -> None:
        with self._lock:
            name = f"emw-tiles-{self._spawned}"
            self._spawned += 1
        threading.Thread(target=self._work, name=name, daemon=True).start()

    @property
    def batch_timeout(self) -> float | None:
        """Seconds a batch may run before its tiles are answered as errors (None: no limit)."""
        return self._batch_timeout

    @batch_timeout.setter
    def batch_timeout(self, seconds: float | None) -> None:
        with self._lock:
            self._batch_timeout = seconds if seconds and seconds > 0 else None
            self._watch_cond.notify_all()

    # ---- called from comm handlers (any thread) ---------------------------------------
    def submit(self, request: TileRequest) -> None:
        """Queue a request; one that cannot be served is answered at once (error or refusal)."""
        error = tile_error(request.z, request.x, request.y)
        if error is not None:  # answered alone: a bad request never shares a batch
            self._answer([(request, error)])
            return
        dropped: list[tuple[TileRequest, Refusal]] = []
        with self._lock:
            if self._closed:
                return
            # No dropping by zoom: Leaflet unloads (and so cancels) the tiles of a zoom it left,
            # and two views of one layer (a second tab) may show different zooms.
            self._queue[request.id] = request
            dropped.extend(self._trim_queue())
            self._lock.notify()
            self.counts["queued"] = len(self._queue)
        if dropped:
            self._answer(dropped)
        else:
            self._on_change()

    def _trim_queue(self) -> list[tuple[TileRequest, Refusal]]:
        """Bound the queue (lock held): the oldest requests give way and are refused."""
        dropped = []
        while len(self._queue) > self.max_queued:
            dropped.append((self._queue.popitem(last=False)[1], QUEUE_FULL))
        return dropped

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

    def held(self, request_ids: Sequence[str]) -> list[str]:
        """The ids among `request_ids` that are queued or being rendered (their reply is still to come)."""
        with self._lock:
            return [rid for rid in request_ids if rid in self._queue or rid in self._running]

    def restart(self) -> int:
        """What is being rendered changed: abandon every batch in flight and queue its requests
        again, so they are answered with the new content at once (not after the old call
        returns). Returns the number of requests queued again."""
        with self._lock:
            self._generation += 1
            self._hung = 0  # the calls that hung were the old content's
            again: list[TileRequest] = []
            for batch in list(self._active):
                self._abandon(batch, "restart")
                self.counts["cancelled"] += sum(r.cancelled for r in batch.requests)
                for r in batch.requests:
                    if not r.cancelled:
                        again.append(dataclasses.replace(r))
                        # The abandoned renderer skips the model call if it has not started it.
                        r.cancelled = True
            for r in again:
                self._queue[r.id] = r
            dropped = self._trim_queue()
            self.counts["queued"] = len(self._queue)
            self._lock.notify_all()
        if dropped:
            self._answer(dropped)
        else:
            self._on_change()
        return len(again)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.counts["cancelled"] += len(self._queue)
            self._queue.clear()
            self.counts["queued"] = 0
            self._lock.notify_all()
            self._watch_cond.notify_all()

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
    def _take_batch(self) -> _Batch | None:
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
            if not batch:
                return _Batch([], self._generation)
            taken = _Batch(batch, self._generation)
            self._active.add(taken)
            self._watch_cond.notify_all()  # a new deadline
            return taken

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
        size = max(1, min(self.batch_size, int(self.batch_seconds / seconds_per_tile)))
        if size == 1 and all(n == 1 for n, _ in timings):
            # Only single tiles seen (e.g. after a first call that traced the model): the fit
            # cannot tell a per-call cost from a per-tile one, and single tiles would be all it
            # ever sees. Two tiles let it tell; without this, one slow first call locked the
            # layer into one model call per tile.
            return min(2, self.batch_size)
        return size

    def _measured(self, seconds: float, tiles: int) -> None:
        with self._lock:
            self._timings.append((tiles, seconds))

    def _work(self) -> None:
        while True:
            taken = self._take_batch()
            if taken is None:
                return
            batch = taken.requests
            if not batch:
                continue
            self._on_change()
            with self._lock:
                hung = self._hung >= self.max_hung and taken.generation == self._generation
            started = time.monotonic()
            if hung:
                results = [self._hung_error(len(batch))] * len(batch)
            else:
                try:
                    results = list(self._render_many(batch))
                    if len(results) != len(batch):
                        raise RuntimeError(f"renderer returned {len(results)} results for {len(batch)} tiles")
                except BaseException as exc:  # noqa: BLE001 - a failing renderer must not kill the worker
                    results = [exc] * len(batch)
            with self._lock:
                if taken.abandoned is not None:
                    # Answered (timeout) or queued again (restart) meanwhile, and a fresh
                    # worker took this thread's place: drop the results and end.
                    if taken.abandoned == "timeout" and taken.generation == self._generation:
                        self._hung -= 1
                    return
                self._active.discard(taken)
            rendered = sum(r is not CANCELLED for r in results)
            if rendered and not hung:  # skipped tiles cost nothing and say nothing about the tiles' cost
                self._measured(time.monotonic() - started, rendered)
            self._answer(list(zip(batch, results)), running=True)

    def _answer(self, answers: Sequence[tuple[TileRequest, object]], running: bool = False) -> None:
        """Count each request's outcome, publish, then reply (not for CANCELLED): whoever sees a
        tile arrive already sees it counted. Lock not held."""
        with self._lock:
            for request, result in answers:
                if result is CANCELLED or isinstance(result, Refusal):
                    outcome = "cancelled"
                else:
                    outcome = "done" if is_tile(result) else "failed"
                    self._done_times.append(time.monotonic())
                if running:
                    self._running.pop(request.id, None)
                    self.counts["running"] -= 1
                self.counts[outcome] += 1
        self._on_change()
        for request, result in answers:
            if result is not CANCELLED:
                try:
                    self._reply(request, result)
                except Exception:  # noqa: BLE001 - e.g. the comm closed while we rendered
                    log.warning("could not send tile %s", request.id, exc_info=True)

    # ---- hung calls -----------------------------------------------------------------------
    def _abandon(self, batch: _Batch, why: str) -> None:
        """Stop waiting for `batch` (lock held): its requests leave the running set and a fresh
        worker replaces the thread stuck in the call."""
        batch.abandoned = why
        self._active.discard(batch)
        for r in batch.requests:
            self._running.pop(r.id, None)
        self.counts["running"] -= len(batch.requests)
        if why == "timeout":
            self._hung += 1
        if not self._closed:
            self._spawn_worker()

    def _watch(self) -> None:
        """Answer the batches that outlive `batch_timeout` with error tiles."""
        while True:
            with self._lock:
                if self._closed:
                    return
                now, timeout = time.monotonic(), self._batch_timeout
                expired = [b for b in self._active if timeout and now - b.started >= timeout]
                if not expired:
                    deadlines = [b.started + timeout for b in self._active] if timeout else []
                    self._watch_cond.wait(max(0.0, min(deadlines) - now) + 0.01 if deadlines else None)
                    continue
                for b in expired:
                    self._abandon(b, "timeout")
            for b in expired:
                error = ModelError(
                    f"no answer from the model within {timeout:g} s (layer.batch_timeout) for a batch "
                    f"of {len(b.requests)} tile(s): gave up on that call. A slow model: raise "
                    "batch_timeout; a hung one: check the model or its endpoint."
                )
                self._answer([(r, CANCELLED if r.cancelled else error) for r in b.requests])

    def _hung_error(self, n: int) -> ModelError:
        return ModelError(
            f"{self._hung} earlier model call(s) never returned (longer than batch_timeout): the "
            f"model is not called again for these {n} tile(s) until one returns. Check the model or "
            "its endpoint, or show another image."
        )


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
