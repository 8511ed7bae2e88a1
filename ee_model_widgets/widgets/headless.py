"""Drive a tile layer without a browser: what a Leaflet view would send, and what it gets back.

Messages go through the widget's real comm dispatch (`Widget._handle_msg`); only the wire
to the frontend is replaced by a recorder. Used by the tests and benchmarks, and handy for
pre-computing tiles in a script. Like the browser, the view colours data tiles with the
style (`_style`) it holds, so a reply shows what the map shows now.
"""

from __future__ import annotations

import io
import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Reply:
    id: str
    status: str
    payload: bytes  # buffers[0]: PNG bytes, or a data tile's float32 values
    at: float  # time.monotonic() when the layer sent it
    content: dict = field(default_factory=dict)
    view: HeadlessView | None = field(default=None, repr=False, compare=False)

    @property
    def kind(self) -> str:
        """'data' (values the view colours) or 'png'."""
        return self.content.get("kind", "png")

    @property
    def values(self) -> np.ndarray | None:
        """A data tile's float32 values (bands, rows, cols), NaN where masked; None for a PNG."""
        if self.kind != "data":
            return None
        c = self.content
        return np.frombuffer(self.payload, dtype="<f4").reshape(c["bands"], c["rows"], c["cols"])

    @property
    def rgba(self) -> np.ndarray:
        """uint8 RGBA of the tile as the view shows it now (data coloured with its current style)."""
        if self.kind == "data":
            return self.view.colour(self)
        from PIL import Image as PILImage

        return np.asarray(PILImage.open(io.BytesIO(self.payload)).convert("RGBA"))

    @property
    def png(self) -> bytes:
        """The tile as a PNG: the bytes the kernel sent, or a data tile as the view colours it."""
        if self.kind == "data":
            from ..core.vis import to_png

            return to_png(self.rgba)
        return self.payload


class HeadlessView:
    """A stand-in for one browser view of `layer` (attach at most one per layer)."""

    def __init__(self, layer):
        self.layer = layer
        self.sent: list[dict] = []  # every custom message the layer sent, in order
        self.replies: dict[str, Reply] = {}
        self.requested_at: dict[str, float] = {}
        self.tiles: dict[str, tuple[int, int, int]] = {}  # request id -> z/x/y
        self.cancelled: set[str] = set()
        self.style: dict = dict(getattr(layer, "_style", {}) or {})  # as a view gets the state at render
        self._cond = threading.Condition()
        self._prefix = uuid.uuid4().hex[:6]
        self._n = 0
        layer.comm.send = self._record

    def _record(self, data=None, metadata=None, buffers=None):
        now = time.monotonic()
        with self._cond:
            if data and data.get("method") == "custom":
                content = data["content"]
                self.sent.append(content)
                if content.get("type") == "tile_response":
                    payload = bytes(buffers[0]) if buffers else b""
                    self.replies[content["id"]] = Reply(
                        content["id"], content.get("status", ""), payload, now, dict(content), self
                    )
            elif (
                data and data.get("method") in ("update", "echo_update") and "_style" in data.get("state", {})
            ):
                from ipywidgets.widgets.widget import _put_buffers

                state = {"_style": data["state"]["_style"]}
                paths = [p for p in data.get("buffer_paths", []) if p and p[0] == "_style"]
                if paths:
                    index = [i for i, p in enumerate(data["buffer_paths"]) if p and p[0] == "_style"]
                    _put_buffers(state, paths, [buffers[i] for i in index])
                self.style = state["_style"]
            self._cond.notify_all()

    def colour(self, reply: Reply) -> np.ndarray:
        """What the browser draws for a data tile: its values coloured with the style held now."""
        from ..core.vis import VisStyle

        values = reply.values
        if not self.style:
            raise RuntimeError(f"tile {reply.id} is data, but the layer sent no style (invalid vis params?)")
        style = VisStyle.from_browser_style(self.style)
        if values.shape[0] != len(style.bands):
            raise RuntimeError(
                f"tile {reply.id} holds other bands than the style shown: the browser asks again"
            )
        return style.colour(values.astype(np.float32), ~np.isfinite(values).all(axis=0))

    def say(self, content: dict) -> None:
        """Deliver a custom message exactly as a frontend's comm_msg reaches the widget."""
        self.layer._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})

    def request(self, z: int, x: int, y: int, id: str | None = None) -> str:
        if id is None:
            id = f"{self._prefix}-{self._n}"
            self._n += 1
        self.requested_at[id] = time.monotonic()
        self.tiles[id] = (z, x, y)
        self.say({"type": "tile_request", "id": id, "z": z, "x": x, "y": y})
        return id

    def cancel(self, id: str) -> None:
        self.cancelled.add(id)
        self.say({"type": "tile_cancel", "id": id})

    def sync(self, ids, sync: int = 0) -> list[str]:
        """Ask which of `ids` the layer still holds (queued or rendering), as the browser does."""
        self.say({"type": "tile_sync", "sync": sync, "ids": list(ids)})
        with self._cond:
            answers = [m for m in self.sent if m.get("type") == "tile_sync" and m.get("sync") == sync]
        return answers[-1]["held"]

    def wait(self, ids, timeout: float = 60.0) -> dict[str, Reply]:
        """Wait until every id in `ids` has a reply; returns them (raises TimeoutError if not)."""
        ids = list(ids)
        end = time.monotonic() + timeout
        with self._cond:
            while not all(i in self.replies for i in ids):
                left = end - time.monotonic()
                if left <= 0:
                    missing = [i for i in ids if i not in self.replies]
                    raise TimeoutError(f"no reply for {len(missing)} tile(s), e.g. {missing[:3]}")
                self._cond.wait(min(left, 0.05))
            return {i: self.replies[i] for i in ids}

    def fetch(self, tiles, timeout: float = 60.0) -> list[Reply]:
        """Request tiles [(z, x, y), ...] together and return their replies in order."""
        ids = [self.request(z, x, y) for z, x, y in tiles]
        got = self.wait(ids, timeout)
        return [got[i] for i in ids]

    def messages(self, kind: str) -> list[dict]:
        with self._cond:
            return [m for m in self.sent if m.get("type") == kind]
