"""`KernelTileLayer`: an ipyleaflet layer whose tiles are PNGs made by Python in the kernel.

The browser half (js/tile_layer.ts) is a Leaflet GridLayer that asks for each tile over the
widget comm; replies carry the PNG as a binary buffer. No HTTP server, no proxy, no side port:
it works wherever widgets work (remote JupyterHub, Binder, Notebook 7).
Comm handlers only enqueue into a `TileScheduler`; its workers render and reply.

Messages (`type` of a custom widget message):
  browser -> kernel  tile_request {id, z, x, y}   one per tile Leaflet creates
  browser -> kernel  tile_cancel {id}             Leaflet unloaded the tile
  browser -> kernel  tile_sync {sync, ids}        which of these requests do you still hold?
  browser -> kernel  tile_report {resent, lost}   requests the browser had to send again / gave up on
  browser -> kernel  style_sync                   a style named (by a tile or a redraw) is not there:
                                                  send `_style` again
  kernel -> browser  tile_response {id, status}   buffers[0] = the PNG (an error tile if status is 'error')
  kernel -> browser  tile_response {id, status, kind: 'data', bands, rows, cols, style}
                                                  buffers[0] = float32 values the browser colours
                                                  (PredictionLayer; see tile_payload.py)
  kernel -> browser  tile_sync {sync, held}       the ids of `ids` that are queued or rendering
  kernel -> browser  redraw {generation?, style?} drop every tile and ask again (PredictionLayer
                                                  names its data generation and style version)
A request the kernel neither holds nor answered was lost on the way (in either direction): the
browser asks for it again, within seconds instead of waiting for `request_timeout`.
"""

from __future__ import annotations

import functools
import io
import logging
import threading
from collections.abc import Callable, Sequence

import ipyleaflet
from traitlets import Float, Int, Unicode, observe

from .._version import EXTENSION_VERSION
from .comm_routing import route_comm
from .scheduler import CANCELLED, Refusal, TileRequest, TileScheduler
from .tile_payload import TileData, is_tile

log = logging.getLogger(__name__)


class KernelTileLayer(ipyleaflet.RasterLayer):
    """A map layer drawn by `tile_fn(z, x, y) -> PNG bytes`, called in the kernel.

    Progress traits (`tiles_queued`, `tiles_running`, `tiles_done`, `tiles_failed`,
    `tiles_cancelled`, `tiles_per_second`) and `last_error` are updated as tiles are served;
    a tile whose `tile_fn` raises or returns something that is not a PNG is drawn as an
    error tile and its message is put in `last_error`, while other tiles keep coming.
    A batch still running after `batch_timeout` seconds is given up on (error tiles), and
    a request the kernel drops unrendered gets a "cancelled" reply: every request is answered.
    """

    _view_name = Unicode("EEKernelTileLayerView").tag(sync=True)
    _model_name = Unicode("EEKernelTileLayerModel").tag(sync=True)
    _view_module = Unicode("ee-model-widgets").tag(sync=True)
    _model_module = Unicode("ee-model-widgets").tag(sync=True)
    _view_module_version = Unicode(EXTENSION_VERSION).tag(sync=True)
    _model_module_version = Unicode(EXTENSION_VERSION).tag(sync=True)

    # Leaflet GridLayer options (o=True: forwarded to the JS layer's options, camelCased).
    tile_size = Int(256).tag(sync=True, o=True)
    min_zoom = Int(0).tag(sync=True, o=True)
    max_zoom = Int(22).tag(sync=True, o=True)
    class_name = Unicode("ee-model-tile").tag(sync=True, o=True)  # CSS hook (and for tests)
    # Seconds the browser waits for a tile before asking once more, then drawing an error tile.
    request_timeout = Float(60.0).tag(sync=True)
    # Seconds one batched render (model call) may take before its tiles become error tiles and
    # a fresh worker takes over; below request_timeout, so the error reaches the browser.
    # None or 0: wait for ever.
    batch_timeout = Float(45.0, allow_none=True)

    tiles_queued = Int(0).tag(sync=True)
    tiles_running = Int(0).tag(sync=True)
    tiles_done = Int(0).tag(sync=True)
    tiles_failed = Int(0).tag(sync=True)
    tiles_cancelled = Int(0).tag(sync=True)
    tiles_per_second = Float(0.0).tag(sync=True)
    last_error = Unicode("").tag(sync=True)
    #: Reported by the browser: requests it sent again because they were lost, and requests it gave
    #: up on (drawn as "no reply from the kernel" tiles). The kernel cannot count these itself.
    tiles_resent = Int(0).tag(sync=True)
    tiles_lost = Int(0).tag(sync=True)

    def __init__(
        self,
        tile_fn: Callable[[int, int, int], bytes] | None = None,
        *,
        workers: int = 2,
        # Measured (benchmarks/prediction_layer.py): batches of 8 tiles waste far less model work
        # in a fast pan than whole-viewport batches (work already started cannot be cancelled),
        # at no measurable cost to a cold viewport: batching gains little on CPU.
        batch_size: int = 8,
        # Batches shrink to about this much work when tiles get slow (see scheduler.py);
        # None keeps every batch at batch_size.
        batch_seconds: float | None = 0.25,
        max_queued: int = 256,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tile_fn = tile_fn
        self._publish_lock = threading.Lock()
        self.scheduler = TileScheduler(
            self._render_many,
            self._reply,
            workers=workers,
            batch_size=batch_size,
            batch_seconds=batch_seconds,
            max_queued=max_queued,
            batch_timeout=self.batch_timeout,
            on_change=self._publish_progress,
        )
        self.on_msg(self._handle_tile_message)
        route_comm(self.comm)  # tile requests must never go to a deleted kernel subshell

    @observe("batch_timeout")
    def _batch_timeout_changed(self, change) -> None:
        if getattr(self, "scheduler", None) is not None:
            self.scheduler.batch_timeout = change["new"]

    # ---- rendering (overridden by PredictionLayer to batch model calls) --------------
    def _render_many(self, requests: Sequence[TileRequest]) -> list[bytes | TileData | BaseException]:
        results: list[bytes | TileData | BaseException] = []
        for r in requests:
            if r.cancelled:  # the browser unloaded it while earlier tiles of the batch rendered
                results.append(CANCELLED)
                continue
            try:
                results.append(self._render_one(r.z, r.x, r.y))
            except Exception as exc:  # noqa: BLE001 - shown as an error tile
                results.append(exc)
        return results

    def _render_one(self, z: int, x: int, y: int) -> bytes:
        if self.tile_fn is None:
            raise RuntimeError("this KernelTileLayer has no tile_fn: pass one, e.g. KernelTileLayer(my_fn)")
        return self.tile_fn(z, x, y)

    # ---- comm protocol -------------------------------------------------------------------
    def _handle_tile_message(self, _widget, content, buffers) -> None:
        """Enqueue/cancel tile work. Never blocks: this may run on the kernel's main thread."""
        if not isinstance(content, dict):
            log.warning("ignoring a malformed tile-layer message: %r", content)
            return
        kind = content.get("type")
        try:
            if kind == "tile_request":
                rid, z, x, y = content["id"], content["z"], content["x"], content["y"]
                if not isinstance(rid, str) or not all(isinstance(v, int) for v in (z, x, y)):
                    raise TypeError("id must be a string and z, x, y integers")
                self.scheduler.submit(TileRequest(rid, z, x, y))
            elif kind == "tile_cancel":
                self.scheduler.cancel(str(content["id"]))
            elif kind == "tile_sync":
                ids = content["ids"]
                if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                    raise TypeError("ids must be a list of strings")
                self.send(
                    {"type": "tile_sync", "sync": content.get("sync"), "held": self.scheduler.held(ids)}
                )
            elif kind == "style_sync" and self.has_trait("_style"):
                self.send_state("_style")  # the view waited too long for it: send it again
            elif kind == "tile_report":
                resent, lost = int(content.get("resent", 0)), int(content.get("lost", 0))
                with self._publish_lock, self.hold_sync():
                    self.tiles_resent += max(resent, 0)
                    self.tiles_lost += max(lost, 0)
            # Anything else (mouse events handled by ipyleaflet itself, future messages) is not ours.
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed %r message (%s): %r", kind, exc, content)

    def _reply(self, request: TileRequest, result: bytes | TileData | BaseException | Refusal) -> None:
        status = "ok"
        if isinstance(result, Refusal):
            # Dropped unrendered: the browser gets a notice tile and stops waiting for it.
            self.send(
                {"type": "tile_response", "id": request.id, "status": "cancelled", "reason": result.reason},
                buffers=[_notice_png(result.reason)],
            )
            return
        if isinstance(result, BaseException):
            status = "error"
            message = f"tile {request.z}/{request.x}/{request.y}: {type(result).__name__}: {result}"
        elif isinstance(result, TileData):
            content = {"type": "tile_response", "id": request.id, "status": status, **result.content()}
            self.send(content, buffers=[result.buffer()])
            return
        elif not is_tile(result):
            status = "error"
            message = (
                f"tile {request.z}/{request.x}/{request.y}: tile_fn returned {type(result).__name__}, "
                "not PNG bytes; return the bytes of a PNG image (e.g. ee_model_widgets.core.vis.to_png(rgba))"
            )
        if status == "error":
            from ..core.vis import error_tile  # lazy: only failing tiles need the drawing code

            self.last_error = message
            result = error_tile(message)
        self.send({"type": "tile_response", "id": request.id, "status": status}, buffers=[bytes(result)])

    def _publish_progress(self) -> None:
        counts = self.scheduler.snapshot()
        with self._publish_lock, self.hold_sync():
            self.tiles_queued = counts["queued"]
            self.tiles_running = counts["running"]
            self.tiles_done = counts["done"]
            self.tiles_failed = counts["failed"]
            self.tiles_cancelled = counts["cancelled"]
            self.tiles_per_second = round(self.scheduler.tiles_per_second, 2)

    # ---- user API ------------------------------------------------------------------------
    def redraw(self) -> None:
        """Ask every view to drop its tiles and request them again (after the data changed)."""
        self.send({"type": "redraw"})

    def close(self) -> None:
        self.scheduler.close()
        super().close()


@functools.lru_cache(maxsize=8)
def _notice_png(text: str) -> bytes:
    """The PNG of a notice tile; cached: a full queue may refuse thousands of requests at once."""
    from ..core.vis import message_tile

    return message_tile(text)


def coordinate_tile(z: int, x: int, y: int) -> bytes:
    """An opaque debug tile showing its own z/x/y: the quickest way to see the transport work."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    # A colour that differs between neighbours, so misplaced tiles are obvious.
    colour = (60 + (x * 67) % 160, 60 + (y * 101) % 160, 60 + (z * 53) % 160, 255)
    img = PILImage.new("RGBA", (256, 256), colour)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 255, 255], outline=(255, 255, 255, 255), width=2)
    draw.text((12, 12), f"z={z}\nx={x}\ny={y}", fill=(255, 255, 255, 255), font_size=28)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
