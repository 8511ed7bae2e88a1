"""Connection-level limits of the predict server: what uvicorn does not bound by itself.

uvicorn gives us a keep-alive timeout (`timeout_keep_alive`), but once a client has sent one byte
of a request nothing limits how long it may take to send the rest, or how many connections may
wait like that: idle half-sent connections pile up until the process runs out of file
descriptors. Its `limit_concurrency` does not help there: it counts those idle connections and
answers 503 to every *real* request once they fill the count. So this module subclasses
uvicorn's httptools protocol, minimally:

- a header deadline: the request line and headers must arrive within `header_timeout` seconds
  of the connection opening (or of the first byte of the next request on a kept-alive one), and
  may not exceed `max_header_bytes` (431) — httptools itself buffers headers without limit;
- a body deadline: the whole body must arrive within `body_timeout` seconds of the headers;
- a send deadline: a client that stops reading its answer (the socket's buffers full, uvicorn
  pausing the write) is closed after `send_timeout` seconds without progress, so a slow reader
  cannot hold a large answer and a connection for ever;
- a connection cap: at `max_connections`, a new connection closes the oldest one that is still
  waiting for its headers (an idle keep-alive or half-sent one), so idle clients cannot lock out
  new ones; when every connection is busy with a request, the new one is closed at once.
Each dropped client costs one short log line, and at most one line per second in all (the rest
are counted in the next line), never a traceback.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("ee_model_widgets.serving")

_IDLE, _HEADERS, _BODY, _APP = "idle", "headers", "body", "app"


@dataclass
class ConnectionLimits:
    """Timeouts (seconds) and caps applied to every connection of one server."""

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    send_timeout: float = 60.0
    keep_alive_timeout: float = 15.0
    max_connections: int = 1024
    max_header_bytes: int = 64 * 1024


class DropLog:
    """One short line per dropped client, at most one line per `interval` seconds."""

    def __init__(self, logger: logging.Logger = log, interval: float = 1.0):
        self._log = logger
        self._interval = interval
        self._last = -float("inf")
        self._suppressed = 0
        self.total = 0

    def note(self, client, reason: str) -> None:
        self.total += 1
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return
        more = (
            f" (and {self._suppressed} more dropped clients since the last message)"
            if self._suppressed
            else ""
        )
        self._last, self._suppressed = now, 0
        who = f"{client[0]}:{client[1]}" if client else "a client"
        self._log.warning("Closed the connection of %s: %s%s", who, reason, more)


class _RateLimitedParserWarnings(logging.Filter):
    """uvicorn logs "Invalid HTTP request received." once per malformed request: a flood of
    garbage would flood the log too. Let one such line through per second, counting the rest."""

    MESSAGES = frozenset({"Invalid HTTP request received."})

    def __init__(self, interval: float = 1.0):
        super().__init__()
        self._interval = interval
        self._last = -float("inf")
        self._suppressed = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self.MESSAGES:
            return True
        now = time.monotonic()
        if now - self._last < self._interval:
            self._suppressed += 1
            return False
        if self._suppressed:
            record.msg = f"{record.msg} (and {self._suppressed} more since the last message)"
        self._last, self._suppressed = now, 0
        return True


def _install_parser_warning_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _RateLimitedParserWarnings) for f in logger.filters):
        logger.addFilter(_RateLimitedParserWarnings())


def guarded_protocol(limits: ConnectionLimits, drops: DropLog) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with header/body deadlines and a connection cap."""
    _install_parser_warning_filter()
    waiting: OrderedDict[HttpToolsProtocol, None] = OrderedDict()  # idle or in headers, oldest first
    open_connections: set[HttpToolsProtocol] = set()
    header_reason = f"no complete request headers within {limits.header_timeout:g} s"
    body_reason = f"the request body did not arrive within {limits.body_timeout:g} s"
    send_reason = f"the client did not read its answer for {limits.send_timeout:g} s"

    class GuardedProtocol(HttpToolsProtocol):
        _stage = _HEADERS
        _timer = None
        _send_timer = None  # apart from _timer: a stalled answer may overlap the next request's stage
        _in_headers = True
        _header_bytes = 0

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(open_connections) >= limits.max_connections and not self._evict_oldest_waiting():
                drops.note(
                    self.client, f"all {limits.max_connections} connections are busy (--max-connections)"
                )
                transport.abort()
                return
            open_connections.add(self)
            waiting[self] = None
            self._arm(limits.header_timeout, header_reason)  # the first request counts from the connect

        def connection_lost(self, exc) -> None:
            open_connections.discard(self)
            waiting.pop(self, None)
            self._cancel()
            self._cancel_send()
            super().connection_lost(exc)

        # asyncio flow control: the transport's write buffer is full, then drained again
        def pause_writing(self) -> None:
            super().pause_writing()
            self._cancel_send()
            self._send_timer = self.loop.call_later(limits.send_timeout, self._drop_stalled)

        def resume_writing(self) -> None:
            super().resume_writing()
            self._cancel_send()

        def data_received(self, data: bytes) -> None:
            if self._in_headers or self._stage == _IDLE:
                self._header_bytes += len(data)
            super().data_received(data)
            # httptools keeps partial headers in memory, without a limit of its own
            if self._in_headers and self._header_bytes > limits.max_header_bytes:
                self._refuse_headers()

        # httptools callbacks, in the order of a request
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers = True
            if self._stage == _IDLE:  # the next request on a kept-alive connection
                self._stage = _HEADERS
                self._arm(limits.header_timeout, header_reason)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._header_bytes = 0
            waiting.pop(self, None)
            self._stage = _BODY
            self._arm(limits.body_timeout, body_reason)
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._stage = _APP
            self._cancel()
            if self.cycle is not None and self.cycle.response_complete:  # answered before the body ended
                self._idle()

        def on_response_complete(self) -> None:
            pipelined = bool(self.pipeline)
            super().on_response_complete()
            if not pipelined and self._stage == _APP and not self.transport.is_closing():
                self._idle()
            # _BODY: answered early (401, 413...) while the body still arrives; its deadline holds

        # helpers
        def _idle(self) -> None:
            self._stage = _IDLE
            self._header_bytes = 0
            waiting[self] = None
            waiting.move_to_end(self)
            self._arm(limits.keep_alive_timeout, None)  # closing an idle kept-alive connection is normal

        def _arm(self, seconds: float, reason: str | None) -> None:
            self._cancel()
            self._timer = self.loop.call_later(seconds, self._drop, reason)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _cancel_send(self) -> None:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

        def _drop_stalled(self) -> None:
            self._send_timer = None
            self._drop(send_reason)

        def _drop(self, reason: str | None) -> None:
            self._timer = None
            if not self.transport.is_closing():
                if reason:
                    drops.note(self.client, reason)
                self.transport.abort()  # nothing worth flushing: the client is not talking

        def _evict_oldest_waiting(self) -> bool:
            victim = next(iter(waiting), None)
            if victim is None:
                return False
            waiting.pop(victim)
            open_connections.discard(victim)
            victim._cancel()
            if victim._stage != _IDLE:  # an idle kept-alive connection is no client misbehaving
                drops.note(victim.client, f"closed to make room ({limits.max_connections} connections open)")
            victim.transport.abort()
            return True

        def _refuse_headers(self) -> None:
            self._in_headers = False
            self._stage = _APP
            self._cancel()
            waiting.pop(self, None)
            drops.note(self.client, f"request headers larger than {limits.max_header_bytes} bytes")
            body = b"Request headers too large."
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()

    return GuardedProtocol
