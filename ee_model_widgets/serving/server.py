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

Security: binds 127.0.0.1 unless told otherwise, optional bearer token (constant-time compare),
request size limit with a 413 before any parsing, a cap on instances per request and a bounded
queue, and no request value is ever used as a path.
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
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import EEModelWidgetsError, InputError, ModelError, ServingError
from . import protocol
from .batcher import Batcher, ServerBusy
from .servable import Servable, Signature, load_servable

log = logging.getLogger(__name__)

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_INSTANCES = 1024
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
    max_batch_size: int = 64,
    batch_window_ms: float = 2.0,
    stats: dict | None = None,
):
    """The Starlette app serving `servable` as model `name` (also usable with any ASGI server)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    batcher = Batcher(max_batch_size=max_batch_size, window_s=batch_window_ms / 1000.0)
    counters = stats if stats is not None else {}
    counters.update({"http_requests": 0, "predict_requests": 0, "errors": 0, "largest_request_bytes": 0})
    counters["batcher"] = batcher.stats
    expected_auth = f"Bearer {token}".encode() if token else None

    def json_response(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
        return Response(body, status_code=status, media_type="application/json", headers=headers)

    def error(status: int, message: str) -> Response:
        counters["errors"] += 1
        headers = {"WWW-Authenticate": 'Bearer realm="ee-model"'} if status == 401 else None
        return json_response(protocol.error_body(message), status, headers)

    def check_auth(request: Request) -> None:
        if expected_auth is None:
            return
        got = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(got, expected_auth):
            what = "no Authorization header" if not got else "a wrong token"
            raise _HTTPError(
                401,
                f"Unauthorized: this server needs 'Authorization: Bearer <token>' and got {what}. "
                "Pass the server's token to the client (e.g. token=...).",
            )

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        too_big = f"The request body is larger than this server's limit of {max_request_bytes} bytes"
        if declared is not None and declared.isdigit() and int(declared) > max_request_bytes:
            if int(declared) <= _DRAIN_LIMIT:
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

    def parse(body: bytes) -> tuple[Signature, protocol.ParsedRequest]:
        obj = protocol.parse_body(body)
        sig = servable.signature(protocol.signature_name_of(obj))
        return sig, protocol.parse_predict(obj, sig, max_instances)

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
                404, f"Servable not found for request: label '{m['label']}' of {name}; use /versions/1."
            )
        return m

    async def models(request: Request) -> Response:
        counters["http_requests"] += 1
        try:
            check_auth(request)
            m = resolve(request.path_params["rest"])
            if request.method == "GET":
                if m["verb"]:
                    raise _HTTPError(405, f"Use POST for :{m['verb']}.")
                if m["metadata"]:
                    body = protocol.metadata_json(name, servable.signatures)
                else:
                    body = protocol.status_json()
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
            sig, req = await run_in_threadpool(parse, body)
            outputs = await asyncio.wrap_future(batcher.submit(sig, req.feeds))
            reply = await run_in_threadpool(protocol.format_predict, outputs, req, sig)
            return json_response(reply)
        except _HTTPError as exc:
            return error(exc.status, exc.message)
        except ServerBusy as exc:
            return error(503, str(exc))
        except InputError as exc:
            return error(400, str(exc))
        except (ModelError, ServingError, EEModelWidgetsError) as exc:
            return error(500, str(exc))
        except Exception as exc:  # noqa: BLE001 - never let a request kill the server; say what happened
            log.exception("predict failed")
            return error(500, f"Internal error: {type(exc).__name__}: {exc}")

    async def root(request: Request) -> Response:
        counters["http_requests"] += 1
        try:
            check_auth(request)
        except _HTTPError as exc:
            return error(exc.status, exc.message)
        return json_response(
            json.dumps(
                {"models": [name], "predict": f"/v1/models/{name}:predict", "source": servable.source}
            ).encode()
        )

    async def not_found(request: Request, exc: HTTPException) -> Response:
        return error(
            exc.status_code, f"{exc.detail}: {request.method} {request.url.path}. Try /v1/models/{name}."
        )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(batcher.close)

    return Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/v1/models/{rest:path}", models, methods=["GET", "POST"]),
        ],
        exception_handlers={HTTPException: not_found},
        lifespan=lifespan,
    )


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


def _make_server(app, sock: socket.socket, log_level: str, background: bool):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None if background else uvicorn.config.LOGGING_CONFIG,  # notebooks keep their logging
        access_log=not background,
        timeout_graceful_shutdown=10,
        lifespan="on",
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
) -> ServerHandle:
    """Serve a model (SavedModel dir, .keras file, Keras model, tf.Module) in a background thread.

    Returns at once with a handle whose `.url` is ready for `Model.from_vertex_ai(handle.url, ...)`.
    `port=0` picks a free port. Stop it with `handle.stop()` or a `with` block.
    """
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
    )
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    server = _make_server(app, sock, log_level, background=True)
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
    """Serve in the foreground (the CLI): Ctrl-C / SIGTERM shut down gracefully."""
    log_level = options.pop("log_level", "info")
    signature = options.pop("signature", None)
    tag = options.pop("tag", "serve")
    name = name or default_name(model)
    _check_name(name)
    sock = bind_socket(host, port)  # fail fast, before loading the model, when the port is taken
    try:
        servable = load_servable(model, signature=signature, tag=tag)
        app = create_app(servable, name, token=token, **options)
    except BaseException:
        sock.close()
        raise
    server = _make_server(app, sock, log_level, background=False)
    handle = ServerHandle(server, None, host, sock.getsockname()[1], name, {})
    if on_ready:
        on_ready(handle, servable)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


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
