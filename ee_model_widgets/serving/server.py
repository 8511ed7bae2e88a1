"""The local predict server: TF Serving's REST API for one model, for notebooks and workshops.

    handle = serve("model_dir", name="fcn")          # background thread, free port on 127.0.0.1
    handle.url  # http://127.0.0.1:PORT/v1/models/fcn  -> Model.from_vertex_ai(handle.url, ...)
    handle.stop()

Endpoints (tensorflow_serving/g3doc/api_rest.md): `POST /v1/models/NAME[/versions/1]:predict`,
`GET /v1/models/NAME[/versions/1]` (status), `GET /v1/models/NAME[/versions/1]/metadata`; errors
are `{"error": "..."}` with 400 (bad request), 401 (token), 404 (unknown model/version/path),
413 (too large), 500 (the model failed), 503 (queue full). Request and reply conventions are in
`protocol.py`; batching of concurrent requests in `batcher.py`.

Why uvicorn + starlette: the server must answer many concurrent clients (a map streams tiles, a
workshop room shares one machine) while the model runs elsewhere; an asyncio server holds
thousands of idle/slow connections cheaply and hands each parsed request to the batcher, and
uvicorn is a maintained production ASGI server (h11 parser, keep-alive, graceful shutdown,
signal handling) that also runs happily in a background thread of a Jupyter kernel. Starlette
adds just routing and request/response objects, with no extra dependency. `http.server` would
need a thread per connection and offers no graceful shutdown; tornado would work too but is a
second event-loop framework for no gain.

Security: binds 127.0.0.1 unless told otherwise, optional bearer token (constant-time compare,
scheme case-insensitive), request size limit with a 413 before any parsing, a cap on instances
per request and on the tensor elements a request may make us allocate (checked on declared
shapes, before allocating: 413), a bounded queue, and no request value is ever used as a path.
Connection timeouts and caps live in `connections.py`; Host/Origin/Content-Type checks against
web pages in `browser_safety.py`. Error texts never carry filesystem paths or graph dumps.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import EEModelWidgetsError, InputError, ModelError, ServingError
from . import protocol
from .batcher import Batcher, ServerBusy
from .browser_safety import BrowserSafety
from .codec import TensorTooLarge
from .connections import ConnectionLimits, DropLog, guarded_protocol
from .servable import Servable, Signature, load_servable

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INSTANCES = 1024
# 4 M elements: a 1024x1024x4 or 2048x2048x1 tile per instance and input; Earth Engine's own
# requests stay under 1.5 MB, i.e. < 0.4 M float32 elements.
DEFAULT_MAX_INSTANCE_ELEMENTS = 4 * 1024 * 1024
# 32 M elements (128 MB as float32) per request, all instances together: a full 64 MB body of
# JSON numbers fits, a few bytes declaring huge shapes do not.
DEFAULT_MAX_REQUEST_ELEMENTS = 32 * 1024 * 1024
# All requests in flight together (parsed, queued, in the model, being answered): 128 M elements,
# 512 MB as float32. Beyond, 503 and the client retries.
DEFAULT_MAX_INFLIGHT_ELEMENTS = 4 * DEFAULT_MAX_REQUEST_ELEMENTS
# Bodies larger than this are not even drained before the 413 (the connection is just closed).
_DRAIN_LIMIT = 1024 * 1024 * 1024

_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def create_app(
    servable: Servable,
    name: str,
    *,
    token: str | None = None,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    max_instance_elements: int = DEFAULT_MAX_INSTANCE_ELEMENTS,
    max_request_elements: int = DEFAULT_MAX_REQUEST_ELEMENTS,
    max_inflight_elements: int = DEFAULT_MAX_INFLIGHT_ELEMENTS,
    max_batch_size: int = 64,
    batch_window_ms: float = 2.0,
    stats: dict | None = None,
    bind_host: str = "127.0.0.1",
    allow_origins: tuple[str, ...] | list[str] = (),
    allow_hosts: tuple[str, ...] | list[str] = (),
    drops: DropLog | None = None,
):
    """The ASGI app serving `servable` as model `name` (also usable with any ASGI server).

    Requests whose Host is not `bind_host`/loopback (or `allow_hosts`), or whose Origin is not in
    `allow_origins`, are refused before routing (see `browser_safety.py`)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response
    from starlette.routing import Route

    batcher = Batcher(max_batch_size=max_batch_size, window_s=batch_window_ms / 1000.0)
    counters = stats if stats is not None else {}
    counters.update({"http_requests": 0, "predict_requests": 0, "errors": 0, "largest_request_bytes": 0})
    counters["batcher"] = batcher.stats
    drops = drops or DropLog()
    expected_token = check_token(token).encode() if token else None

    def json_response(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def error(status: int, message: str, echo: str = "") -> Response:
        """A JSON error reply: `message` cleaned of server paths and dumps (`public_message`),
        then `echo`, words of the client's own request that it may see again as they were."""
        counters["errors"] += 1
        headers = {"WWW-Authenticate": 'Bearer realm="ee-model"'} if status == 401 else None
        return json_response(protocol.error_body(protocol.public_message(message) + echo), status, headers)

    def authorized(request: Request) -> bool:
        if expected_token is None:
            return True
        # RFC 9110: the scheme is case-insensitive ("bearer x" is as good as "Bearer x")
        scheme, _, credentials = request.headers.get("authorization", "").strip().partition(" ")
        got = credentials.strip().encode() if scheme.lower() == "bearer" else b""
        return hmac.compare_digest(got, expected_token)

    def check_auth(request: Request) -> None:
        if not authorized(request):
            got = request.headers.get("authorization")
            what = "no Authorization header" if not got else "a wrong token"
            raise _HTTPError(
                401,
                f"Unauthorized: this server needs 'Authorization: Bearer <token>' and got {what}. "
                "Pass the server's token to the client (e.g. token=...).",
            )

    async def read_body(request: Request) -> bytes:
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":  # else the JSON parser would report bytes it cannot decode
            raise _HTTPError(
                415, f"Content-Encoding: {encoding} is not supported; send the request body uncompressed."
            )
        declared = request.headers.get("content-length")
        too_big = f"The request body is larger than this server's limit of {max_request_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            # A client that sent "Expect: 100-continue" waits for our go before sending the body
            # (curl does above 1 MB): refuse at once rather than ask for a body only to drop it.
            waiting = request.headers.get("expect", "").lower() == "100-continue"
            if int(declared) <= _DRAIN_LIMIT and not waiting:
                async for _ in request.stream():  # drain so that the client can read our answer
                    pass
            raise _HTTPError(413, f"{too_big} ({declared} bytes); send fewer instances per request.")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            # Past the limit, keep draining the same stream (so the client can read our 413)
            # but stop keeping the bytes. A second `request.stream()` would fail once the last
            # chunk has arrived ("Stream consumed").
            if size <= max_request_bytes:
                chunks.append(chunk)
            elif size > _DRAIN_LIMIT:
                break  # not worth draining: answer now, the connection is then closed
        if size > max_request_bytes:
            raise _HTTPError(413, f"{too_big}; send fewer instances per request.")
        counters["largest_request_bytes"] = max(counters["largest_request_bytes"], size)
        return b"".join(chunks)

    pool = protocol.ElementPool(max(max_inflight_elements, max_request_elements))

    def parse(body: bytes, limits: protocol.Limits) -> tuple[Signature, protocol.ParsedRequest]:
        # Parsing builds Python objects (lists, numbers) that the tensor limits never see.
        reserved = limits.take_json(body)
        try:
            obj = protocol.parse_body(body)
            sig = servable.signature(protocol.signature_name_of(obj))
            return sig, protocol.parse_predict(obj, sig, limits=limits)
        finally:
            limits.give_back_json(reserved)

    def resolve(rest: str) -> re.Match:
        m = _PATH.match(rest)
        if not m or m["name"] != name:
            requested = m["name"] if m else rest
            raise _HTTPError(
                404, f"Servable not found for request: Latest({requested}). This server serves '{name}'."
            )
        if m["version"] is not None and m["version"] != "1":
            raise _HTTPError(
                404, f"Servable not found for request: Specific({name}, {m['version']}). Version 1 is served."
            )
        if m["label"] is not None:
            raise _HTTPError(
                404,
                f"Servable not found for request: label '{m['label']}' of {name}; use /v1/models/{name}/versions/1.",
            )
        return m

    async def models(request: Request) -> Response:
        counters["http_requests"] += 1
        try:
            check_auth(request)
            m = resolve(request.path_params["rest"])
            if request.method in ("GET", "HEAD"):  # HEAD: uvicorn sends the headers only
                if m["verb"] == "predict":
                    raise _HTTPError(405, "Use POST for :predict.")
                if m["verb"]:
                    raise _HTTPError(
                        404,
                        f"Unknown method :{m['verb']} on /v1/models/{name}; use GET /v1/models/{name}"
                        f"[/metadata] or POST /v1/models/{name}:predict.",
                    )
                if m["metadata"]:
                    body = protocol.metadata_json(name, servable.signatures)
                else:
                    # TF Serving's status, plus the fields KServe's v1 readiness probe reads
                    body = {"name": name, "ready": True, **protocol.status_json()}
                return json_response(json.dumps(body).encode())
            if m["verb"] != "predict":
                if m["verb"] in ("classify", "regress"):
                    raise _HTTPError(400, f":{m['verb']} is not supported by this server; use :predict.")
                raise _HTTPError(
                    404, f"Unknown method on /v1/models/{name}; use POST /v1/models/{name}:predict."
                )
            body = await read_body(request)
            counters["predict_requests"] += 1
            # parsing (JSON, base64, TensorProto) runs off the event loop, which keeps reading
            # other requests meanwhile: one thread hop per step, as each hop costs a wake-up
            limits = protocol.Limits(max_instances, max_instance_elements, max_request_elements, pool)
            try:
                sig, req = await run_in_threadpool(parse, body, limits)
                del body
                outputs = await asyncio.wrap_future(batcher.submit(sig, req.feeds))
                reply = await run_in_threadpool(protocol.format_predict, outputs, req, sig)
            finally:
                limits.release()  # the feeds are dropped with this frame
            return json_response(reply)
        except _HTTPError as exc:
            return error(exc.status, exc.message)
        except ServerBusy as exc:
            return error(503, str(exc))
        except TensorTooLarge as exc:
            return error(413, str(exc))
        except InputError as exc:
            return error(400, str(exc))
        except (ModelError, ServingError, EEModelWidgetsError) as exc:
            return error(500, str(exc))
        except ClientDisconnect:
            # the client went away mid-body (or a body deadline closed it): nobody to answer
            drops.note(request.client, "the client disconnected before sending the whole body")
            return Response(status_code=400)
        except Exception as exc:  # noqa: BLE001 - never let a request kill the server; say what happened
            log.exception("predict failed")
            return error(500, f"Internal error ({type(exc).__name__}); the server log has the details.")

    async def root(request: Request) -> Response:
        # KServe's v1 liveness probe (GET /, reads "status"); open to probes that carry no token,
        # the model's name and URL only with it
        counters["http_requests"] += 1
        body: dict[str, Any] = {"status": "alive"}
        if authorized(request):
            body.update({"models": [name], "predict": f"/v1/models/{name}:predict"})
        return json_response(json.dumps(body).encode())

    async def not_found(request: Request, exc: HTTPException) -> Response:
        # The path the client asked for is its own: said as it was (only cut short), not cleaned
        # as if it were one of ours (/V1/models/x used to come back as "<path>").
        asked = request.url.path if len(request.url.path) <= 200 else request.url.path[:200] + "..."
        return error(exc.status_code, f"{exc.detail}:", f" {request.method} {asked}. Try /v1/models/{name}.")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(batcher.close)

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/v1/models/{rest:path}", models, methods=["GET", "POST"]),
        ],
        exception_handlers={HTTPException: not_found},
        lifespan=lifespan,
    )
    return BrowserSafety(app, bind_host=bind_host, allow_origins=allow_origins, allow_hosts=allow_hosts)


class ServerHandle:
    """A running server: `.url` of the model, `.stop()`; also a context manager."""

    def __init__(self, server, thread: threading.Thread | None, host: str, port: int, name: str, stats: dict):
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port
        self.name = name
        self._stats = stats

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The model URL, e.g. http://127.0.0.1:8501/v1/models/fcn (POST url + ':predict')."""
        return f"{self.base_url}/v1/models/{self.name}"

    @property
    def stats(self) -> dict[str, Any]:
        """Counters: HTTP requests, predict requests, errors, and the batcher's model calls."""
        out = {k: v for k, v in self._stats.items() if k != "batcher"}
        out.update(self._stats.get("batcher", {}))
        return out

    def reset_stats(self) -> None:
        """Zero the counters (e.g. before measuring one piece of work)."""
        for d in (self._stats, self._stats.get("batcher", {})):
            for k, v in d.items():
                if isinstance(v, int):
                    d[k] = 0

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful shutdown: stop accepting, finish in-flight requests, stop the batcher."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():  # in-flight requests did not finish in time
            self._server.force_exit = True
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ee-model server {self.url} ({state})>"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0 = a free port); errors say what to change."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        with contextlib.suppress(Exception):
            sock.close()
        raise ServingError(
            f"Cannot listen on {host}:{port}: {exc.strerror or exc}. Choose another --port (0 picks a free one) "
            "or stop the program using it."
        ) from None
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_LIMIT_FIELDS = (
    "header_timeout",
    "body_timeout",
    "send_timeout",
    "keep_alive_timeout",
    "max_connections",
    "max_header_bytes",
)


def _connection_limits(options: dict) -> ConnectionLimits:
    """Pop the connection options out of `options` (the rest goes to `create_app`)."""
    limits = ConnectionLimits(**{k: options.pop(k) for k in _LIMIT_FIELDS if options.get(k) is not None})
    for k in _LIMIT_FIELDS:
        options.pop(k, None)
    return limits


def _fit_file_limit(limits: ConnectionLimits) -> None:
    """Raise this process's open-file limit to what `max_connections` needs (up to the hard
    limit), else lower `max_connections`: running out of descriptors makes asyncio log an
    error per refused accept and starves every client."""
    try:
        import resource
    except ImportError:  # Windows: no RLIMIT_NOFILE
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = limits.max_connections + 256  # the model's files, TensorFlow's threads, the log...
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft != resource.RLIM_INFINITY and soft < need:
        limits.max_connections = max(16, soft - 256)
        log.warning(
            "The open-file limit (%d) allows only %d connections; raise it (ulimit -n) for more.",
            soft,
            limits.max_connections,
        )


def _make_server(app, sock: socket.socket, log_level: str, background: bool, limits: ConnectionLimits, drops):
    import uvicorn

    _fit_file_limit(limits)
    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None if background else uvicorn.config.LOGGING_CONFIG,  # notebooks keep their logging
        access_log=not background,
        timeout_graceful_shutdown=10,
        lifespan="on",
        http=guarded_protocol(limits, drops),  # httptools + header/body deadlines, connection cap
        timeout_keep_alive=limits.keep_alive_timeout,
        backlog=2048,
    )
    return uvicorn.Server(config)


def serve(
    model,
    name: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
    token: str | None = None,
    *,
    signature: str | None = None,
    tag: str = "serve",
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_instances: int = DEFAULT_MAX_INSTANCES,
    max_batch_size: int = 64,
    batch_window_ms: float = 2.0,
    log_level: str = "warning",
    **options,
) -> ServerHandle:
    """Serve a model (SavedModel dir, .keras file, Keras model, tf.Module) in a background thread.

    Returns at once with a handle whose `.url` is ready for `Model.from_vertex_ai(handle.url, ...)`.
    `port=0` picks a free port. Stop it with `handle.stop()` or a `with` block. `options`:
    `max_instance_elements`, `max_request_elements`, `allow_origins`, `allow_hosts`,
    `header_timeout`, `body_timeout`, `send_timeout`, `keep_alive_timeout` (seconds), `max_connections`.
    """
    limits = _connection_limits(options)
    drops = DropLog()
    servable = load_servable(model, signature=signature, tag=tag)
    name = name or default_name(model)
    _check_name(name)
    if not is_loopback(host) and not token:
        log.warning(
            "Serving %s on %s without a token: anyone who can reach this machine can use it.", name, host
        )
    stats: dict = {}
    app = create_app(
        servable,
        name,
        token=token,
        max_request_bytes=max_request_bytes,
        max_instances=max_instances,
        max_batch_size=max_batch_size,
        batch_window_ms=batch_window_ms,
        stats=stats,
        bind_host=host,
        drops=drops,
        **options,
    )
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    server = _make_server(app, sock, log_level, True, limits, drops)
    failure: list[BaseException] = []

    def run():
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"ee-model-server-{name}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise ServingError(
                f"The server for {name} did not start: {failure[0] if failure else 'timed out'}."
            )
        time.sleep(0.01)
    return ServerHandle(server, thread, host, actual_port, name, stats)


def run_forever(
    model,
    name: str | None = None,
    port: int = 8501,
    host: str = "127.0.0.1",
    token: str | None = None,
    *,
    on_ready=None,
    **options,
) -> None:
    """Serve in the foreground (the CLI): Ctrl-C / SIGTERM finish the requests in flight, then
    return normally (the caller exits 0)."""
    log_level = options.pop("log_level", "info")
    signature = options.pop("signature", None)
    tag = options.pop("tag", "serve")
    limits = _connection_limits(options)
    drops = DropLog()
    name = name or default_name(model)
    _check_name(name)
    sock = bind_socket(host, port)  # fail fast, before loading the model, when the port is taken
    try:
        servable = load_servable(model, signature=signature, tag=tag)
        app = create_app(servable, name, token=token, bind_host=host, drops=drops, **options)
    except BaseException:
        sock.close()
        raise
    server = _make_server(app, sock, log_level, False, limits, drops)
    handle = ServerHandle(server, None, host, sock.getsockname()[1], name, {})
    if on_ready:
        on_ready(handle, servable)
    try:
        with _signals_end_quietly():
            server.run(sockets=[sock])
    finally:
        sock.close()
        drops.flush()


@contextlib.contextmanager
def _signals_end_quietly():
    """uvicorn drains on SIGINT/SIGTERM, then re-raises the signal to whatever handler was there
    before it: SIGTERM's default kills the process (exit 143, no "Server stopped."), SIGINT's
    raises KeyboardInterrupt. With a do-nothing handler there, the drained server just returns."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def default_name(model) -> str:
    """A model name from a path ('models/fcn.keras' -> 'fcn') or 'model'."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        stem = p.stem if p.suffix.lower() in (".keras", ".h5", ".hdf5") else p.name
    else:
        stem = str(getattr(model, "name", "") or "")
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", stem).strip("._") if stem else ""
    return cleaned or "model"


def _check_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
        raise InputError(
            f"Model name {name!r} may only contain letters, digits, '.', '_' and '-' (it goes in the URL)."
        )


def check_token(token: str) -> str:
    """A bearer token is visible ASCII: HTTP clients cannot send others (or strip spaces)."""
    if not isinstance(token, str) or not re.fullmatch(r"[\x21-\x7e]+", token):
        raise InputError(
            "The token may only contain visible ASCII characters (no spaces): HTTP headers carry it."
        )
    return token
