"""The tile scheduler on its own: batching, cancellation, bounds, thread safety."""

from __future__ import annotations

import threading
import time

from ee_model_widgets.errors import InputError
from ee_model_widgets.widgets.scheduler import (
    CANCELLED,
    PNG_SIGNATURE,
    QUEUE_FULL,
    TileRequest,
    TileScheduler,
    batch_cost,
)
from tests.helpers import run_in_threads

PNG = PNG_SIGNATURE + b"fake-but-signed"


class Recorder:
    """A renderer that records the batches it is given and can be held back."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[list[str]] = []
        self.replies: dict[str, object] = {}
        self.gate = gate
        self.lock = threading.Lock()
        self.all_replied = threading.Event()
        self.expected = 0

    def render_many(self, requests):
        if self.gate is not None:
            self.gate.wait(10)
        with self.lock:
            self.batches.append([r.id for r in requests])
        return [PNG for _ in requests]

    def reply(self, request, result):
        with self.lock:
            self.replies[request.id] = result
            if len(self.replies) >= self.expected:
                self.all_replied.set()


def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return False


def held_scheduler(first: TileRequest, expected: int = 0, **kw):
    """A one-worker scheduler whose worker is busy with `first`, held at a gate until `gate.set()`.

    Requests submitted meanwhile queue up, so tests can shape the queue before anything runs.
    """
    gate = threading.Event()
    rec = Recorder(gate)
    rec.expected = expected
    # the time held at the gate is not rendering cost: keep it out of the batch sizing
    kw.setdefault("batch_seconds", None)
    sched = TileScheduler(rec.render_many, rec.reply, workers=1, linger=0, **kw)
    sched.submit(first)
    assert wait_for(lambda: sched.snapshot()["running"] == 1)
    return sched, rec, gate


def test_requests_that_arrive_together_share_one_batch():
    # The first request occupies the single worker (held at the gate) ...
    sched, rec, gate = held_scheduler(TileRequest("first", 3, 0, 0), expected=9, batch_size=8)
    # ... while a burst of eight arrives; they must be coalesced into one call.
    for i in range(8):
        sched.submit(TileRequest(f"t{i}", 3, i % 8, 1))
    gate.set()
    assert rec.all_replied.wait(10)
    assert rec.batches[0] == ["first"]
    assert rec.batches[1] == [f"t{i}" for i in range(8)]
    assert sched.snapshot()["done"] == 9
    sched.close()


def test_cancel_before_start_drops_the_work():
    sched, rec, gate = held_scheduler(TileRequest("busy", 2, 0, 0), expected=2, batch_size=1)
    sched.submit(TileRequest("keep", 2, 1, 0))
    sched.submit(TileRequest("drop", 2, 1, 1))
    assert sched.cancel("drop") is True
    assert sched.cancel("busy") is False  # already running: cannot be taken back
    gate.set()
    assert rec.all_replied.wait(10)
    time.sleep(0.05)
    assert "drop" not in rec.replies
    assert set(rec.replies) == {"busy", "keep"}
    assert sched.snapshot()["cancelled"] == 1
    sched.close()


def test_queue_is_bounded_and_the_dropped_requests_are_refused():
    sched, rec, gate = held_scheduler(TileRequest("busy", 1, 0, 0), batch_size=4, max_queued=5)
    for i in range(20):  # rapid panning: far more requests than the queue holds
        sched.submit(TileRequest(f"p{i}", 5, i, 0))
    snap = sched.snapshot()
    assert snap["queued"] == 5
    assert snap["cancelled"] == 15
    # The oldest gave way, and each was told so at once: nobody waits for them.
    assert {rid for rid, r in rec.replies.items() if r is QUEUE_FULL} == {f"p{i}" for i in range(15)}
    # The newest five stay queued, with the running one; the dropped ones are not held.
    assert sched.held(["busy", "p0", "p14", "p15", "p19"]) == ["busy", "p15", "p19"]
    # Requests of any zoom are served (two views of a layer may show different zooms); this one
    # makes the queue overflow once more, so p15 gives way.
    sched.submit(TileRequest("z6", 6, 0, 0))
    gate.set()
    assert wait_for(lambda: len(rec.replies) == 22)
    assert rec.replies["busy"] == PNG and rec.replies["z6"] == PNG and rec.replies["p15"] is QUEUE_FULL
    assert all(rec.replies[f"p{i}"] == PNG for i in range(16, 20))
    assert sched.held(list(rec.replies)) == []
    sched.close()


def test_failing_renderer_fails_its_tiles_and_workers_survive():
    calls = []

    def render_many(requests):
        calls.append(len(requests))
        if requests[0].id == "boom":
            raise ValueError("model exploded")
        return [PNG for _ in requests]

    replies = {}
    done = threading.Event()

    def reply(request, result):
        replies[request.id] = result
        if len(replies) == 2:
            done.set()

    sched = TileScheduler(render_many, reply, workers=1, batch_size=1, linger=0)
    sched.submit(TileRequest("boom", 0, 0, 0))
    sched.submit(TileRequest("fine", 0, 0, 0))
    assert done.wait(10)
    assert isinstance(replies["boom"], ValueError)
    assert replies["fine"] == PNG
    snap = sched.snapshot()
    assert (snap["failed"], snap["done"]) == (1, 1)
    sched.close()


def test_concurrent_submissions_are_all_accounted_for():
    rec = Recorder()
    n_threads, per_thread = 8, 50
    rec.expected = n_threads * per_thread
    sched = TileScheduler(rec.render_many, rec.reply, workers=3, batch_size=8, max_queued=10_000, linger=0)

    def pound(t):
        for i in range(per_thread):
            sched.submit(TileRequest(f"{t}-{i}", 6, i, t))
            if i % 7 == 0:
                sched.cancel(f"{t}-{i}")

    run_in_threads(pound, n_threads)
    assert wait_for(lambda: sched.snapshot()["queued"] == 0 and sched.snapshot()["running"] == 0)
    snap = sched.snapshot()
    # Every request is either answered exactly once or counted as cancelled, never both, never lost.
    assert snap["done"] + snap["cancelled"] == n_threads * per_thread
    assert len(rec.replies) == snap["done"]
    assert sum(len(b) for b in rec.batches) == snap["done"]
    assert all(len(b) <= 8 for b in rec.batches)
    sched.close()


def test_a_request_cancelled_after_it_was_taken_is_flagged_and_not_answered():
    taken = threading.Event()
    go = threading.Event()
    seen = {}

    def render_many(requests):
        taken.set()
        go.wait(10)  # the browser cancels "b" while this batch is being prepared
        seen.update({r.id: r.cancelled for r in requests})
        return [CANCELLED if r.cancelled else PNG for r in requests]

    replies = {}
    sched = TileScheduler(render_many, lambda r, res: replies.setdefault(r.id, res), workers=1, linger=0.05)
    sched.submit(TileRequest("a", 5, 0, 0))
    sched.submit(TileRequest("b", 5, 1, 0))
    assert taken.wait(10)
    assert sched.cancel("b") is False  # already taken: only flagged
    go.set()
    assert wait_for(lambda: sched.snapshot()["running"] == 0)
    assert seen == {"a": False, "b": True}
    assert set(replies) == {"a"}
    snap = sched.snapshot()
    assert (snap["done"], snap["cancelled"]) == (1, 1)
    sched.close()


def test_newest_requests_are_served_first():
    sched, rec, gate = held_scheduler(TileRequest("busy", 7, 0, 0), expected=4, batch_size=2)
    for rid in ("old", "mid", "new"):
        sched.submit(TileRequest(rid, 7, 1, 1))
    gate.set()
    assert rec.all_replied.wait(10)
    # While panning, the latest tiles are the ones on screen: they go first (in arrival order).
    assert rec.batches[1:] == [["mid", "new"], ["old"]]
    sched.close()


class SlowRenderer(Recorder):
    """Takes `fixed` seconds per batch plus `per_tile` seconds per tile: a model on a loaded
    machine (per tile) or a remote endpoint (a fixed round trip)."""

    def __init__(self, per_tile: float = 0.0, fixed: float = 0.0):
        super().__init__()
        self.per_tile, self.fixed = per_tile, fixed

    def render_many(self, requests):
        time.sleep(self.fixed + self.per_tile * len(requests))
        return super().render_many(requests)


def _batch_sizes_after_a_burst(rec: SlowRenderer, n: int = 24) -> list[int]:
    rec.expected = n
    # linger: the worker waits 50 ms for the rest of the burst, so the first batch is full
    sched = TileScheduler(rec.render_many, rec.reply, workers=1, batch_size=8, batch_seconds=0.1, linger=0.05)
    for i in range(n):
        sched.submit(TileRequest(f"t{i}", 6, i, 0))
    assert rec.all_replied.wait(30)
    sched.close()
    return [len(b) for b in rec.batches]


def test_slow_tiles_get_small_batches_that_newer_requests_can_overtake():
    # 50 ms per tile and a 0.1 s budget: a first batch of 2 measures the cost, then at most 2
    # tiles per batch, so a started batch never holds more than ~0.1 s of work
    sizes = _batch_sizes_after_a_burst(SlowRenderer(per_tile=0.05))
    assert sizes[0] == 2
    assert max(sizes) <= 2
    assert sum(sizes) == 24


def test_a_fixed_round_trip_longer_than_the_budget_keeps_full_batches():
    # 0.2 s per batch whatever its size (a remote model's latency): smaller batches would not
    # finish sooner, so once two sizes have shown that, the batches are full
    sizes = _batch_sizes_after_a_burst(SlowRenderer(fixed=0.2), n=40)
    assert sizes[:2] == [2, 1]
    assert sizes[2:5] == [8, 8, 8]
    assert sum(sizes) == 40


def test_single_tiles_seen_alone_do_not_lock_the_batches_at_one_tile():
    # The first tiles of a map arrive one at a time and the first call is slow (the model is
    # traced): 0.2 s per batch, all of it fixed. Seen on single tiles only, that looked like
    # 0.2 s per tile, so every later batch had one tile (one model call per tile). A burst
    # now tries two tiles, the fit sees the cost is per batch, and the batches fill up.
    rec = SlowRenderer(fixed=0.2)
    sched = TileScheduler(rec.render_many, rec.reply, workers=1, batch_size=8, batch_seconds=0.1, linger=0.05)
    for i in range(3):
        rec.expected = i + 1
        rec.all_replied.clear()
        sched.submit(TileRequest(f"alone{i}", 6, i, 1))
        assert rec.all_replied.wait(10)
    rec.expected = 3 + 24
    rec.all_replied.clear()
    for i in range(24):
        sched.submit(TileRequest(f"t{i}", 6, i, 0))
    assert rec.all_replied.wait(30)
    sched.close()
    sizes = [len(b) for b in rec.batches]
    assert sizes[:4] == [1, 1, 1, 2]
    assert sizes[4:6] == [8, 8] and sum(sizes) == 27


def test_fast_tiles_get_full_batches_after_the_first():
    assert _batch_sizes_after_a_burst(SlowRenderer()) == [2, 8, 8, 6]


def test_batch_cost_separates_the_fixed_and_the_per_tile_time():
    fixed, per_tile = batch_cost([(8, 0.5), (4, 0.3), (2, 0.2), (8, 0.5)])
    assert abs(fixed - 0.1) < 1e-9 and abs(per_tile - 0.05) < 1e-9
    assert batch_cost([(8, 0.4), (8, 0.4)]) == (0.0, 0.05)  # one size seen: all of it per tile
    assert batch_cost([(8, 0.3), (2, 0.31)]) == (0.305, 0.0)  # no growth with size: latency-bound


class Hanging:
    """A renderer whose calls block until released (a hung model), recording what it renders."""

    def __init__(self):
        self.release = threading.Event()
        self.started = []
        self.requests = []  # the TileRequest objects handed over, in order
        self.replies: dict[str, list] = {}
        self.lock = threading.Lock()

    def render_many(self, requests):
        with self.lock:
            self.started.append([r.id for r in requests])
            self.requests.append(list(requests))
        self.release.wait(30)
        return [PNG for _ in requests]

    def reply(self, request, result):
        with self.lock:
            self.replies.setdefault(request.id, []).append(result)


def test_a_batch_past_its_timeout_fails_and_a_fresh_worker_takes_over():
    r = Hanging()
    sched = TileScheduler(r.render_many, r.reply, workers=1, batch_size=1, linger=0, batch_timeout=0.2)
    try:
        sched.submit(TileRequest("stuck", 3, 0, 0))
        assert wait_for(lambda: "stuck" in r.replies)
        assert "no answer from the model within 0.2 s" in str(r.replies["stuck"][0])
        # The only worker is stuck in the call, yet the next request is taken at once; with
        # every worker's call stuck (max_hung = workers = 1) it is refused without a call.
        sched.submit(TileRequest("next", 3, 1, 0))
        assert wait_for(lambda: "next" in r.replies)
        assert "never returned" in str(r.replies["next"][0])
        assert r.started == [["stuck"]]
        r.release.set()  # the stuck call returns: its late result is not sent twice
        assert wait_for(lambda: sched._hung == 0)
        sched.submit(TileRequest("after", 3, 2, 0))
        assert wait_for(lambda: "after" in r.replies)
        assert r.replies == {"stuck": r.replies["stuck"], "next": r.replies["next"], "after": [PNG]}
        snap = sched.snapshot()
        assert (snap["failed"], snap["done"], snap["running"]) == (2, 1, 0)
    finally:
        r.release.set()
        sched.close()


def test_restart_queues_the_batches_in_flight_again_and_drops_their_old_results():
    r = Hanging()
    sched = TileScheduler(r.render_many, r.reply, workers=1, batch_size=4, linger=0.02, batch_seconds=None)
    try:
        for i in range(3):
            sched.submit(TileRequest(f"t{i}", 3, i, 0))
        assert wait_for(lambda: sched.snapshot()["running"] == 3)
        assert sched.restart() == 3
        # The abandoned call sees its requests cancelled (a renderer that has not reached the
        # model yet skips it); a fresh worker renders them again, with the new content.
        assert all(req.cancelled for req in r.requests[0])
        assert wait_for(lambda: len(r.started) == 2)
        assert sorted(r.started[1]) == ["t0", "t1", "t2"]
        assert not any(req.cancelled for req in r.requests[1])
        r.release.set()
        assert wait_for(lambda: sched.snapshot()["done"] == 3)
        time.sleep(0.2)
        assert all(len(v) == 1 for v in r.replies.values()) and len(r.replies) == 3
    finally:
        r.release.set()
        sched.close()


def test_a_request_outside_the_world_is_answered_at_once_and_never_batched():
    rec = Recorder()
    sched = TileScheduler(rec.render_many, rec.reply, workers=1, linger=0)
    try:
        for rid, z, x, y in [("x", 2, 4, 0), ("y", 2, 0, -1), ("z", -1, 0, 0), ("deep", 31, 0, 0)]:
            sched.submit(TileRequest(rid, z, x, y))
            assert isinstance(rec.replies[rid], InputError)  # before submit returned
        assert "Tile 2/4/0 is outside the world: at zoom 2, x and y run from 0 to 3" in str(rec.replies["x"])
        assert "the zoom must be 0..30" in str(rec.replies["deep"])
        assert rec.batches == [] and sched.snapshot()["failed"] == 4
    finally:
        sched.close()
