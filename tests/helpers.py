"""Small helpers shared by tests (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_in_threads(work: Callable[[int], object], n: int) -> None:
    """Run `work(0)` .. `work(n - 1)` in `n` concurrent threads and wait for all of them.

    An exception in a thread would otherwise only be printed; the first one is re-raised
    here so the test fails with its traceback.
    """
    errors: list[BaseException] = []

    def guarded(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
