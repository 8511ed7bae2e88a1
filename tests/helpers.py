"""Small helpers shared by tests (fixtures live in tests/conftest.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator


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


@contextlib.contextmanager
def serve_app(app) -> Iterator[int]:
    """Serve an ASGI `app` with uvicorn on 127.0.0.1 in a thread; yields its port."""
    import uvicorn

    from ee_model_widgets.serving.server import bind_socket

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)


def tile_lattice_scene(values, z: int, x0: int, y0: int, band: str = "v"):
    """An EPSG:3857 image of `values` (bands, rows, cols) lying on the slippy-map lattice: its
    top-left corner is tile (z, x0, y0), so a map tile's pixels are a slice of `values` (a
    reference worked out without our read path)."""
    from affine import Affine

    import ee_model_widgets as emw
    from ee_model_widgets.core.grid import MERCATOR_HALF_WORLD

    span = 2 * MERCATOR_HALF_WORLD / 2**z
    res = span / 256
    transform = Affine(res, 0, -MERCATOR_HALF_WORLD + x0 * span, 0, -res, MERCATOR_HALF_WORLD - y0 * span)
    return emw.Image.from_array(values, transform=transform, crs="EPSG:3857", band_names=[band])
