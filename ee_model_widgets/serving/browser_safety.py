"""Keep web pages away from the predict server: Host, Origin and Content-Type checks.

A server on 127.0.0.1 without a token is reachable by every page the user's browser opens:
- a page may POST to it (CSRF): browsers send such "simple" requests without asking first
  when the body is `text/plain` or a form, so the server must refuse anything but JSON;
- by DNS rebinding, a page of `evil.example` whose name then resolves to 127.0.0.1 may even
  read the replies: its requests carry `Host: evil.example`, which the server must refuse.
Browsers send an `Origin` header with every POST and every cross-origin request, so refusing
origins that are not explicitly allowed (`--allow-origin`) stops both; the Host check also
stops DNS rebinding; requiring JSON is the last line. Scripts and notebooks send no `Origin`,
and a request without `Content-Type` is accepted (KServe's REST client sends none): a browser
cannot send one without an `Origin`.

Allowed origins also get CORS headers and preflight answers, from Starlette's CORSMiddleware.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from . import protocol

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def allowed_host_names(bind_host: str, extra: Iterable[str] = ()) -> tuple[frozenset[str], bool]:
    """The Host names a server bound to `bind_host` answers, and whether any IP literal is fine.

    Loopback names always; the bound address; on a wildcard or non-loopback address also this
    machine's name and any IP literal (DNS rebinding needs a name, an address cannot be rebound)."""
    names = set(LOOPBACK_NAMES) | {_normalize(h) for h in extra if h}
    bound = _normalize(bind_host)
    if bound not in _WILDCARDS:
        names.add(bound)
    public = bound in _WILDCARDS or not _is_loopback_ip(bound)
    if public:
        host = socket.gethostname().lower()
        names |= {host, f"{host}.local", host.split(".")[0]}
    return frozenset(names), public


def _normalize(host: str) -> str:
    return host.strip().lower().rstrip(".").strip("[]")


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host_name(header: str) -> str:
    """'example.org:8501' -> 'example.org'; '[::1]:8501' -> '::1'."""
    header = header.strip()
    if header.startswith("["):
        return _normalize(header[1 : header.find("]")] if "]" in header else header)
    return _normalize(header.rsplit(":", 1)[0] if header.count(":") == 1 else header)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class BrowserSafety:
    """ASGI middleware refusing foreign `Host`s (400), unlisted `Origin`s (403) and non-JSON
    POST bodies (415) with a JSON error naming the fix; allowed origins get CORS."""

    def __init__(
        self,
        app,
        *,
        bind_host: str,
        allow_origins: Iterable[str] = (),
        allow_hosts: Iterable[str] = (),
    ):
        from starlette.middleware.cors import CORSMiddleware

        allow_hosts = list(allow_hosts)
        self.any_host = "*" in allow_hosts  # behind a proxy that checks Host itself
        self.hosts, self.any_ip = allowed_host_names(bind_host, [h for h in allow_hosts if h != "*"])
        self.origins = frozenset(o.strip().rstrip("/").lower() for o in allow_origins if o.strip())
        self.app = (
            CORSMiddleware(
                app,
                allow_origins=["*"] if "*" in self.origins else sorted(self.origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type"],
                max_age=600,
            )
            if self.origins
            else app
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, message = refusal
        body = protocol.error_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def refusal(self, scope) -> tuple[int, str] | None:
        """(status, message) if the request must be refused, else None."""
        headers = {}
        for k, v in scope["headers"]:
            if k in (b"host", b"origin", b"content-type"):
                if k in headers:  # which one would count? (the last one used to)
                    return 400, f"The request has more than one {k.decode().title()} header; send one."
                headers[k] = v.decode("latin-1")
        host = headers.get(b"host")
        if host is not None and not self.any_host:
            name = _host_name(host)
            if name not in self.hosts and not (self.any_ip and _is_ip(name)):
                return 400, (
                    f"This server does not answer for the host name {name!r} (a web page using DNS "
                    "rebinding sends such names). Use the address the server listens on, or start it "
                    f"with --allow-host {name} if this name is yours."
                )
        origin = headers.get(b"origin")
        if origin is not None:
            normalized = origin.strip().rstrip("/").lower()
            if normalized not in self.origins and "*" not in self.origins:
                return 403, (
                    f"Cross-origin browser request from {origin!r} refused. If pages from that origin may "
                    f"use this model, start the server with --allow-origin {origin}."
                )
        if scope["method"] == "POST":
            ctype = headers.get(b"content-type")
            if ctype is not None and ctype.split(";", 1)[0].strip().lower() != "application/json":
                return 415, (
                    f"Content-Type {ctype.split(';', 1)[0].strip()!r} is not accepted: send the JSON body "
                    "with 'Content-Type: application/json'."
                )
        return None
