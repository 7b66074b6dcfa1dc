"""Ingress checks run on every request: loopback Host, no browser Origin, local token.

A browser page can reach 127.0.0.1 (and a DNS-rebinding page can even make its own
origin resolve there), so a request that carries an Origin, or a Host that is not a
loopback name, is refused before it touches anything.
"""

from __future__ import annotations

import hmac
import socket
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict

from sidecar.errors import AuthenticationFailed, NotFound, PermissionDenied, SidecarError
from sidecar.net import host_is_loopback
from sidecar.proxy.keys import CONFIG, PROVIDERS, RUNTIME

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/", "/healthz"})


def _via_unix_socket(request: web.Request) -> bool:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    return sock is not None and getattr(socket, "AF_UNIX", None) == sock.family


def presented_tokens(request: web.Request) -> list[str]:
    """Every place a client may put the local token."""
    out = []
    h = request.headers
    if "x-sidecar-token" in h:
        out.append(h["x-sidecar-token"])
    auth = h.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        out.append(auth[7:].strip())
    if "x-api-key" in h:
        out.append(h["x-api-key"])
    return out


def token_ok(request: web.Request, token: str) -> bool:
    """True when the request carries the local token."""
    want = token.encode()
    return any(hmac.compare_digest(t.encode(), want) for t in presented_tokens(request))


def without_local_token(request: web.Request, token: str) -> web.Request:
    """`request` without the headers that carry the local token: x-sidecar-token always,
    Authorization and x-api-key when they hold the token. The token never goes upstream,
    and a client's own login in those headers still does."""
    h = request.headers
    auth = h.get("authorization", "")
    drop_auth = auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), token.encode())
    drop_key = "x-api-key" in h and hmac.compare_digest(h["x-api-key"].encode(), token.encode())
    if not (drop_auth or drop_key or "x-sidecar-token" in h):
        return request
    kept = CIMultiDict(h)
    kept.popall("x-sidecar-token", None)
    if drop_auth:
        kept.popall("authorization", None)
    if drop_key:
        kept.popall("x-api-key", None)
    return request.clone(headers=kept)


def error_response(err: SidecarError) -> web.Response:
    """The Anthropic error envelope for a sidecar error."""
    return web.Response(
        status=err.status,
        body=err.envelope(),
        content_type="application/json",
        headers=err.headers,
    )


@web.middleware
async def ingress(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse foreign Hosts, browser Origins and missing tokens; map errors to envelopes."""
    try:
        if "origin" in request.headers:
            raise PermissionDenied(
                "requests from a web browser (an Origin header) are refused; the sidecar only serves local programs"
            )
        if not host_is_loopback(request.host) and not _via_unix_socket(request):
            raise PermissionDenied(
                f"Host {request.host!r} is not a loopback name; use http://127.0.0.1 or http://localhost"
            )
        path = request.path
        if path.startswith("/sidecar/"):
            if not token_ok(request, request.app[RUNTIME].token):
                raise AuthenticationFailed(
                    "the control API needs the local token (Authorization: Bearer <token>); "
                    "it is in the file shown by `claude-sidecar config path`"
                )
        elif path not in OPEN_PATHS and _proxy_needs_token(request) and not token_ok(request, request.app[RUNTIME].token):
            raise AuthenticationFailed(
                "this sidecar injects its own provider keys, so it needs its local token: "
                'run Claude Code with `claude-sidecar run -- claude` or `eval "$(claude-sidecar env)"`'
            )
        return await handler(without_local_token(request, request.app[RUNTIME].token))
    except SidecarError as e:
        return error_response(e)
    except web.HTTPNotFound:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed:
        return error_response(NotFound(f"{request.method} is not supported on {request.path}"))


def _proxy_needs_token(request: web.Request) -> bool:
    return request.app[CONFIG].server.require_token or any(p.injects_keys for p in request.app[PROVIDERS].values())
