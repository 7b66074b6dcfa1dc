"""Ingress checks run on every request: loopback Host, no browser Origin, local token.

A browser page can reach 127.0.0.1 (and a DNS-rebinding page can even make its own
origin resolve there), so a request that carries an Origin, or a Host that is not a
loopback name, is refused before it touches anything.
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.compression_utils import HAS_BROTLI
from aiohttp.web_protocol import RequestPayloadError
from multidict import CIMultiDict

from sidecar.appkeys import BUS, CONFIG, LEDGER, PROVIDERS, RUNTIME
from sidecar.config import Config
from sidecar.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    RequestTooLarge,
    SidecarError,
)
from sidecar.gateway import bearer, oauth
from sidecar.ledger.record import UsageRecord, new_ulid
from sidecar.net import host_is_loopback
from sidecar.observability.metrics import METRICS
from sidecar.providers.base import Provider
from sidecar.proxy.lane import check_header_bytes
from sidecar.proxy.listener import BAD_VERSION, Connection
from sidecar.web_errors import error_response

log = logging.getLogger(__name__)
LINGER_SECONDS = 1.0  # after a 413, how long a client still sending may go on before the close
REQUEST_ID = web.RequestKey("sidecar.request_id", str)  # the id a handler gave the request (for a last-resort 500)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/", "/healthz", *oauth.OPEN_PATHS})  # sign-in is how a client gets a token
REFUSALS = frozenset({401, 403, 429})  # the sidecar's own refusals, each logged with its reason


def _via_unix_socket(request: web.Request) -> bool:
    """Whether the request came over the Unix socket (asked of the socket once per connection)."""
    proto = request.protocol
    if isinstance(proto, Connection) and proto.via_unix_socket is not None:
        return proto.via_unix_socket
    sock = request.transport.get_extra_info("socket") if request.transport else None
    local = sock is not None and getattr(socket, "AF_UNIX", None) == sock.family
    if isinstance(proto, Connection):
        proto.via_unix_socket = local
    return local


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


@web.middleware
async def ingress(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse malformed requests, foreign peers and Hosts, browser Origins and missing tokens;
    map every error to an Anthropic envelope (an unexpected one to a 500 naming a request id)."""
    forwarded: web.Request | None = None
    try:
        check_request(request)
        server = request.app[CONFIG].server
        local = _via_unix_socket(request)
        if not local and server.loopback and not host_is_loopback(request.remote):
            raise PermissionDenied(f"connections from {request.remote} are refused; the sidecar serves this machine only")
        if "origin" in request.headers:
            raise PermissionDenied(
                "requests from a web browser (an Origin header) are refused; the sidecar only serves local programs"
            )
        if server.loopback and not local and not host_is_loopback(request.host):
            raise PermissionDenied(
                f"Host {request.host!r} is not a loopback name; use http://127.0.0.1 or http://localhost"
            )
        path = request.path
        if path.startswith("/sidecar/") or path in ("/metrics", "/mcp"):  # /mcp: the MCP gateway
            if not token_ok(request, request.app[RUNTIME].token):
                raise AuthenticationFailed(
                    "the control API needs the local token (Authorization: Bearer <token>); "
                    "it is in the file shown by `claude-sidecar config path`"
                )
        elif (
            path not in OPEN_PATHS
            and request.match_info.http_exception is None  # no such endpoint: a 404, token or not
            and not bearer.signed_in(request)
            and _proxy_needs_token(request)
            and not token_ok(request, request.app[RUNTIME].token)
        ):
            raise AuthenticationFailed(
                "this sidecar needs its local token (it injects its own provider keys, or listens beyond loopback): "
                'run Claude Code with `claude-sidecar run -- claude` or `eval "$(claude-sidecar env)"`'
            )
        forwarded = bearer.without_gateway_token(without_local_token(request, request.app[RUNTIME].token))
        return await handler(forwarded)
    except SidecarError as e:
        if e.status in REFUSALS and forwarded is None:  # turned away here: the user can see why
            rid = _record_refusal(request, e)
            log.warning("refused %s %s (%s): %d %s: %s", request.method, request.path, rid, e.status, e.error_type, e.message)
            resp = error_response(e)
            resp.headers["x-sidecar-request-id"] = rid
            return resp
        if isinstance(e, RequestTooLarge):
            _discard_rest(request, LINGER_SECONDS)
        elif e.status == 408 or isinstance(e, BodyUnreadable):
            _discard_rest(request)
        return error_response(e)
    except web.HTTPNotFound:
        return error_response(NotFound(f"no such endpoint: {request.method} {request.path}"))
    except web.HTTPMethodNotAllowed:
        return error_response(NotFound(f"{request.method} is not supported on {request.path}"))
    except web.HTTPRequestEntityTooLarge:
        _discard_rest(request, LINGER_SECONDS)
        limit = request.app[CONFIG].server.max_body_mb
        return error_response(RequestTooLarge(f"the request body is larger than {limit:g} MB (server.max_body_mb)"))
    except RequestPayloadError as e:
        _discard_rest(request)
        reason = (str(e).strip().splitlines() or ["unreadable"])[-1].strip()
        return error_response(InvalidRequest(f"the request body could not be read: {reason}"))
    except (ConnectionError, web.HTTPException):
        raise  # the client left (aiohttp closes quietly); other HTTP answers are enveloped by the listener
    except Exception:
        # Bad input should never get here; if something does, the client gets an envelope
        # that names the request, and the log has the traceback under the same id.
        rid = (forwarded if forwarded is not None else request).get(REQUEST_ID) or new_ulid()
        log.exception("request %s (%s %s) failed unexpectedly", rid, request.method, request.path)
        resp = error_response(SidecarError(f"internal error in the sidecar (request {rid}); see its log"))
        resp.headers["x-sidecar-request-id"] = rid
        return resp


def _record_refusal(request: web.Request, e: SidecarError) -> str:
    """A ledger row (and a `request` event for the TUI) for a model request refused at ingress,
    so `usage` shows why Claude Code was turned away; the id goes back in x-sidecar-request-id."""
    rid = new_ulid()
    led = request.app.get(LEDGER)
    if led is None or not request.path.startswith(("/v1/", "/anthropic/v1/")):
        return rid  # the control API and the rest: the log line is the record
    rec = led.record(UsageRecord(
        id=rid, ts=time.time(), endpoint=request.path, requested_model=None, provider="", upstream_model=None,
        stream=False, session_id=request.headers.get("x-claude-code-session-id"),
        agent_id=request.headers.get("x-claude-code-agent-id"), status=e.status, outcome="rejected",
        error_type=e.error_type,
    ))  # fmt: skip
    bus = request.app[BUS]
    if bus.subscribers:
        bus.publish("request", rec.to_dict())
    if (stats := request.app.get(METRICS)) is not None:
        stats.refused_at_ingress(e.status)
    return rid


class BodyUnreadable(InvalidRequest):
    """The request's framing or encoding cannot be read (the rest of the body is not drained)."""


_VISIBLE = re.compile(r"[\x21-\x7e]{1,256}")
# Recorded in the ledger, the audit log and the event stream: visible ASCII only.
ID_HEADERS = ("x-claude-code-session-id", "x-claude-code-agent-id")
CODINGS = frozenset({"", "identity", "gzip", "deflate", *(("br",) if HAS_BROTLI else ())})


def check_request(request: web.Request) -> None:
    """Refuse what cannot safely travel further: an HTTP version other than 1.0/1.1; a header
    value with a control byte or bytes that are not UTF-8 (the upstream head, the cache key and
    the logs need text; valid UTF-8 goes upstream exactly as sent); a session or agent id that
    is not 1-256 visible ASCII characters (ids are recorded); an undecodable Content-Encoding;
    a Content-Length over the cap. Percent-encoded URLs go upstream as the client encoded them."""
    if request.get(BAD_VERSION):
        raise BodyUnreadable("this HTTP version is not supported; use HTTP/1.1")
    if not isinstance(request.protocol, Connection):  # the listener has checked them already
        check_header_bytes(request.raw_headers)
    for id_header in ID_HEADERS:
        for v in request.headers.getall(id_header, ()):
            if not _VISIBLE.fullmatch(v):
                raise InvalidRequest(f"header {id_header!r} must be 1-256 visible ASCII characters")
    coding = request.headers.get("content-encoding", "").strip().lower()
    if coding not in CODINGS:
        raise BodyUnreadable(f"Content-Encoding {coding!r} is not supported (send the body plain, or gzip/deflate)")
    length = request.content_length
    limit = request.app[CONFIG].server.max_body_bytes
    if length is not None and length > limit:
        raise RequestTooLarge(
            f"the request body ({length} bytes) is larger than {limit / 1048576:g} MB (server.max_body_mb)"
        )


def _discard_rest(request: web.Request, linger: float = 0.0) -> None:
    """Close after the answer instead of reading the rest of a body nobody will use."""
    conn = request.protocol
    if isinstance(conn, Connection):
        conn.discard_rest(linger)


def _proxy_needs_token(request: web.Request) -> bool:
    return proxy_needs_token(request.app[CONFIG], request.app[PROVIDERS])


def proxy_needs_token(cfg: Config, providers: dict[str, Provider]) -> bool:
    """Whether the proxy endpoints need the local token: when asked to, when the listener is
    reachable beyond loopback, or when the sidecar injects provider keys of its own."""
    return cfg.server.require_token or not cfg.server.loopback or any(p.injects_keys for p in providers.values())
