"""HTTP transport of the REST client (`serving/client.py`): keep-alive connections, urllib3's
`Retry` with our rules, and a reply body read within a deadline and a size limit."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable

from urllib3 import exceptions as http_errors
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from ..errors import ServingError

RETRY_STATUSES = frozenset({429, 502, 503, 504})
_READ_CHUNK = 1 << 20


def _pool_manager(connections: int, timeout: float):
    """Keep-alive HTTP(S) connections, at most `connections` per host (callers wait for a free one).

    urllib3 rather than httpx: http.client reads a megabyte body in a few C-level reads where
    httpx's pure-Python h11 parser takes 64 KB steps; measured on 16 one-tile requests
    (1.4 MB up, 0.7 MB down) to our server, 12 ms against 30 ms. Retries: `_retry`, per request."""
    import urllib3

    try:
        import certifi  # the CA bundle requests/httpx use; the system's store when it is missing

        ca = {"ca_certs": certifi.where()}
    except ImportError:
        ca = {}
    manager = urllib3.PoolManager(
        num_pools=4,
        maxsize=connections,
        block=True,
        timeout=urllib3.Timeout(connect=min(timeout, 10.0), read=timeout),
        **ca,
    )
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


class _HeaderDeadline:
    """Connection mixin: the status line and headers must arrive within the read timeout in all.
    The socket timeout bounds each read only: a server trickling its headers held the call for
    ever. Past the deadline the socket is shut down and the read fails as a read timeout (which
    `_Retry` does not retry)."""

    def getresponse(self):
        sock, limit = self.sock, self.timeout
        if not isinstance(limit, (int, float)):
            return super().getresponse()
        expired = threading.Event()

        def expire() -> None:
            expired.set()
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            return super().getresponse()
        except Exception:
            if expired.is_set():
                raise TimeoutError(f"no complete reply headers within {limit:g} s") from None
            raise
        finally:
            timer.cancel()


class _HTTPConnection(_HeaderDeadline, HTTPConnection):
    pass


class _HTTPSConnection(_HeaderDeadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _Retry(Retry):
    """urllib3's `Retry` with three rules of ours: a read timeout is not retried (the model is slow,
    not unreachable: retrying would make the caller wait `timeout` once per retry), a
    `Retry-After` waits at most 30 s (one that is neither seconds nor an HTTP date: the backoff),
    and the body of a reply that is retried is not read."""

    RETRY_AFTER_STATUS_CODES = RETRY_STATUSES

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        if isinstance(error, http_errors.ReadTimeoutError):
            raise error
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        if response is not None:
            # A reply that will be retried is not read: urllib3 would drain its body with no time
            # or size limit (a 503 trickling or endless held the call forever); closing costs a
            # reconnect.
            response.close()
        return retry

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            return min(super().parse_retry_after(retry_after), 30.0)
        except http_errors.InvalidHeader:
            return 0.0  # no wait of the server's: the backoff applies


def _retry(max_retries: int, backoff: float, private_headers: Iterable[str] = ()) -> Retry:
    """Connection errors and RETRY_STATUSES retried `max_retries` times (POST included: a
    prediction has no side effect); the last answer is returned when retries run out. A
    redirect to another host drops `private_headers` (the caller's own: API keys and the like)
    besides urllib3's Authorization and Cookie."""
    return _Retry(
        remove_headers_on_redirect=Retry.DEFAULT_REMOVE_HEADERS_ON_REDIRECT
        | {h.lower() for h in private_headers},
        total=max_retries,
        allowed_methods=None,  # every method, POST included
        status_forcelist=RETRY_STATUSES,
        backoff_factor=backoff,
        backoff_max=8.0,
        backoff_jitter=backoff,
        raise_on_status=False,
    )


def _transport_error(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return f"{type(exc).__name__}: {reason}"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace").strip()


def read_reply(resp, url: str, timeout: float, limit: int, too_large_hint: str = "") -> bytes:
    """The body of `resp` (opened with preload_content=False), read within `timeout` seconds of
    its headers and at most `limit` bytes; anything else raises ServingError naming `url`.

    The socket timeout bounds each read only: a server trickling a byte now and then would
    hold the tile forever, so a timer interrupts the read when the reply's time is up."""
    too_large = f"{url} sent a reply of more than {limit} bytes {too_large_hint}".rstrip()
    declared = resp.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        resp.close()
        resp.release_conn()
        raise ServingError(too_large)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        resp.shutdown()  # wakes the blocked read, which then fails

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    chunks, size, ok = [], 0, False
    try:
        for chunk in resp.stream(_READ_CHUNK):
            size += len(chunk)
            if size > limit:
                raise ServingError(too_large)
            chunks.append(chunk)
        if expired.is_set():  # the shutdown may end the stream quietly, as if the reply were done
            raise http_errors.ProtocolError("read interrupted")
        ok = True
    except (http_errors.HTTPError, OSError) as exc:
        if expired.is_set():
            raise ServingError(
                f"{url} did not finish its reply within timeout={timeout:g} s: the server sends too "
                "slowly or never ends its reply. Raise timeout=... if the endpoint is just slow."
            ) from None
        raise ServingError(
            f"{url} broke off its reply ({_transport_error(exc)}): the server closed the connection "
            "mid-reply; it may have crashed or restarted."
        ) from None
    finally:
        timer.cancel()
        if not ok:
            resp.close()  # the connection is not reused: the rest of the reply is unread
        resp.release_conn()
    return b"".join(chunks)
