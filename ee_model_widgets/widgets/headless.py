"""Drive a tile layer without a browser: what a Leaflet view would send, and what it gets back.

Messages go through the widget's real comm dispatch (`Widget._handle_msg`); only the wire
to the frontend is replaced by a recorder. Used by the tests and benchmarks, and handy for
pre-computing tiles in a script.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass


@dataclass
class Reply:
    id: str
    status: str
    png: bytes
    at: float  # time.monotonic() when the layer sent it


class HeadlessView:
    """A stand-in for one browser view of `layer` (attach at most one per layer)."""

    def __init__(self, layer):
        self.layer = layer
        self.sent: list[dict] = []  # every custom message the layer sent, in order
        self.replies: dict[str, Reply] = {}
        self.requested_at: dict[str, float] = {}
        self.tiles: dict[str, tuple[int, int, int]] = {}  # request id -> z/x/y
        self.cancelled: set[str] = set()
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
                    png = bytes(buffers[0]) if buffers else b""
                    self.replies[content["id"]] = Reply(content["id"], content.get("status", ""), png, now)
            self._cond.notify_all()

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
