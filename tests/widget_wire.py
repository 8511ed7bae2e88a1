"""A stand-in for the browser end of a widget comm: records what a widget sends, delivers messages."""

from __future__ import annotations

import threading
import time


class SentMessages:
    """Stands in for the comm's wire: records what the layer sends to the browser."""

    def __init__(self):
        self.messages: list[tuple[dict, list]] = []
        self.cond = threading.Condition()

    def send(self, data=None, metadata=None, buffers=None):
        with self.cond:
            self.messages.append((data, buffers or []))
            self.cond.notify_all()

    def responses(self):
        return [
            (d["content"], b)
            for d, b in self.messages
            if d.get("method") == "custom" and d["content"].get("type") == "tile_response"
        ]

    def wait_responses(self, n, timeout=10):
        end = time.monotonic() + timeout
        with self.cond:
            while len(self.responses()) < n and time.monotonic() < end:
                self.cond.wait(0.05)
        return self.responses()


def browser_says(layer, content):
    """Deliver a custom message exactly as a frontend's comm_msg reaches the widget."""
    layer._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})
