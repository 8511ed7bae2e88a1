"""Background work for the panel: one daemon thread per kind of job, so the kernel never freezes.

Widget callbacks run on the kernel's shell thread (or a subshell thread); anything that may
take more than a blink (loading a model, the first model call, statistics, an inspector read,
an export) is handed to a `Jobs` lane instead. A lane runs its jobs one at a time in order;
with `latest_only=True` a job still waiting is replaced by a newer one (a user flicking
through models only gets the last one loaded). Errors go to `on_error`, never to stderr of
some unrelated cell.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class _Lane:
    """One worker thread and its queue of (fn, args) jobs."""

    def __init__(self, name: str, on_error: Callable[[str, BaseException], None]):
        self.name = name
        self._on_error = on_error
        self._cond = threading.Condition()
        self._queue: list[tuple[Callable, tuple, dict]] = []
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"emw-panel-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, args: tuple, kwargs: dict, latest_only: bool) -> None:
        with self._cond:
            if self._closed:
                return
            if latest_only:
                self._queue.clear()
            self._queue.append((fn, args, kwargs))
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not self._queue and not self._busy

    def wait(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._queue.clear()
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
                fn, args, kwargs = self._queue.pop(0)
                self._busy = True
            try:
                fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - shown in the panel, the lane lives on
                log.debug("panel job %s failed", self.name, exc_info=True)
                try:
                    self._on_error(self.name, exc)
                except Exception:  # noqa: BLE001
                    log.exception("error handler of panel lane %s failed", self.name)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


class Jobs:
    """Named lanes of background jobs: `submit("apply", fn, ...)`, `wait()` until all are idle."""

    def __init__(self, on_error: Callable[[str, BaseException], None] | None = None):
        self._on_error = on_error or (lambda lane, exc: log.error("panel job %s failed: %s", lane, exc))
        self._lanes: dict[str, _Lane] = {}
        self._lock = threading.Lock()

    def submit(self, lane: str, fn: Callable[..., Any], *args: Any, latest_only: bool = False, **kwargs: Any):
        """Run `fn(*args, **kwargs)` on lane `lane`'s thread (after the lane's earlier jobs)."""
        with self._lock:
            worker = self._lanes.get(lane)
            if worker is None:
                worker = self._lanes[lane] = _Lane(lane, self._on_error)
        worker.submit(fn, args, kwargs, latest_only)

    def busy(self) -> bool:
        with self._lock:
            lanes = list(self._lanes.values())
        return not all(w.idle() for w in lanes)

    def wait(self, timeout: float | None = None, lanes: list[str] | None = None) -> bool:
        """Block until the lanes (default: all) are idle; False if `timeout` seconds passed first.

        A job may submit follow-up jobs to another lane, so lanes are polled until all are
        idle at once.
        """
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                workers = [w for name, w in self._lanes.items() if lanes is None or name in lanes]
            for w in workers:
                left = None if end is None else max(0.0, end - time.monotonic())
                if not w.wait(left):
                    return False
            if all(w.idle() for w in workers):
                with self._lock:
                    if len(self._lanes) == len(workers) or lanes is not None:
                        return True

    def close(self) -> None:
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
        for w in lanes:
            w.close()
