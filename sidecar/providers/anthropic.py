"""The Anthropic passthrough: body bytes up, status, headers and SSE bytes back, untouched.

Retries never happen here; once the first byte went to the client, an upstream failure
aborts the client connection (TCP reset) instead of ending it cleanly, because Claude Code
accepts a clean end after a finished block as a complete, truncated answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time

import aiohttp
import msgspec
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.config import ProviderConfig
from sidecar.errors import UpstreamTimeout, UpstreamUnavailable
from sidecar.net import upstream_proxy
from sidecar.protocol.anthropic import SSETap
from sidecar.providers.h1 import H1Pool, H1Response
from sidecar.proxy.context import RequestContext
from sidecar.secrets import ResolvedKey

log = logging.getLogger(__name__)

UpstreamResponse = aiohttp.ClientResponse | H1Response

# Never forwarded upstream: hop-by-hop headers, what aiohttp recomputes, the sidecar's own
# control headers, and browser headers (a browser request was refused at ingress anyway).
_DROP_UP = frozenset(
    {
        "host", "content-length", "connection", "keep-alive", "proxy-connection",
        "proxy-authorization", "proxy-authenticate", "te", "trailer", "trailers",
        "transfer-encoding", "upgrade", "accept-encoding", "origin", "cookie",
        # aiohttp has already decoded a compressed request body; what we send is plain.
        "content-encoding",
    }
)
_AUTH = frozenset({"x-api-key", "authorization"})
# Not copied back: hop-by-hop, and what aiohttp sets for the body it sends (we decompress).
_DROP_DOWN = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "upgrade", "trailer"}
)


def upstream_headers(client: CIMultiDictProxy[str], key: ResolvedKey | None) -> list[tuple[str, str]]:
    """The client's headers as they go upstream: same names, values and order, minus hop-by-hop;
    the client's credentials are replaced by `key` when the sidecar injects one."""
    out = [
        (name, value)
        for name, value in client.items()
        if not (
            (low := name.lower()) in _DROP_UP
            or low.startswith("x-sidecar-")
            or (key is not None and low in _AUTH)
        )
    ]
    if key is not None:
        out.append(("x-api-key", key.value))
    return out


def downstream_headers(upstream: CIMultiDictProxy[str], ctx: RequestContext) -> CIMultiDict[str]:
    """The upstream's response headers as the client gets them, plus the sidecar's own."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream.items():
        if name.lower() not in _DROP_DOWN:
            out.add(name, value)
    out["x-sidecar-request-id"] = ctx.id
    out["x-sidecar-upstream"] = f"{ctx.provider}/{ctx.summary.model or ctx.upstream_model or ''}".rstrip("/")
    return out


# A reset discards what the peer has received but not yet read, so the bytes already sent
# get this long to be read first (Claude Code then reports the break instead of re-running).
ABORT_GRACE_SECONDS = 0.05


async def abort_client(request: web.BaseRequest) -> None:
    """Reset the client's connection so it sees an error, never a clean (truncated) end."""
    transport = request.transport
    if transport is None:
        return
    await asyncio.sleep(ABORT_GRACE_SECONDS)
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class AnthropicProvider:
    """Sends a canonical (Anthropic) request to an Anthropic-speaking upstream."""

    def __init__(self, cfg: ProviderConfig, keys: list[ResolvedKey], session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.keys = keys
        self.session = session
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.connect_timeout, sock_read=cfg.read_timeout)
        self._next_key = 0
        self.proxy = upstream_proxy(cfg.base_url)
        # The lean client serves direct connections; a proxied upstream goes through aiohttp.
        self.h1 = None if self.proxy else H1Pool(cfg.base_url, cfg.connect_timeout, cfg.read_timeout)

    @property
    def injects_keys(self) -> bool:
        """True when the sidecar supplies the credential instead of the client."""
        return bool(self.keys)

    def _key(self) -> ResolvedKey | None:
        if not self.keys:
            return None
        self._next_key = (self._next_key + 1) % len(self.keys)
        return self.keys[self._next_key]

    async def open(self, ctx: RequestContext, request: web.Request) -> UpstreamResponse:
        """Send the request upstream and return the response once its headers arrived."""
        ctx.provider = self.name
        ctx.upstream_model = ctx.head.model
        headers = upstream_headers(request.headers, self._key())
        body = ctx.body if request.method != "GET" else b""
        try:
            if self.h1 is not None:
                return await self.h1.request(request.method, request.rel_url.path_qs, headers, body)
            return await self.session.request(
                request.method,
                self.cfg.base_url + request.rel_url.path_qs,
                data=body or None,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
                proxy=self.proxy,
            )
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            raise UpstreamTimeout(f"upstream {self.name} ({self.cfg.base_url}) did not answer in time: {e or 'timeout'}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise UpstreamUnavailable(f"cannot reach upstream {self.name} ({self.cfg.base_url}): {e}") from None

    def close(self) -> None:
        """Close pooled upstream connections."""
        if self.h1 is not None:
            self.h1.close()

    async def relay(self, ctx: RequestContext, request: web.Request, up: UpstreamResponse) -> web.StreamResponse:
        """Copy the upstream response to the client: SSE event by event, anything else whole."""
        ctx.status = up.status
        ctx.upstream_request_id = up.headers.get("request-id")
        if up.headers.get("content-type", "").startswith("text/event-stream"):
            return await self._relay_stream(ctx, request, up)
        try:
            body = await up.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            up.release()
            ctx.outcome = "upstream_error"
            if isinstance(e, TimeoutError):
                raise UpstreamTimeout(f"upstream {self.name} stalled while sending its response") from None
            raise UpstreamUnavailable(f"upstream {self.name} broke off its response: {e}") from None
        ctx.first_byte_at = time.perf_counter()
        ctx.response_bytes = len(body)
        if up.headers.get("content-type", "").startswith("application/json"):
            try:
                msg = msgspec.json.decode(body)
            except msgspec.DecodeError:
                msg = None
            if isinstance(msg, dict):
                ctx.summary.take_message(msg)
        if up.status >= 400:
            ctx.outcome = "upstream_error"
        return web.Response(status=up.status, body=body, headers=downstream_headers(up.headers, ctx))

    async def _relay_stream(self, ctx: RequestContext, request: web.Request, up: UpstreamResponse) -> web.StreamResponse:
        resp = web.StreamResponse(status=up.status, headers=downstream_headers(up.headers, ctx))
        tap = SSETap()
        ctx.summary = tap.summary
        try:
            await resp.prepare(request)
        except (ConnectionError, RuntimeError):
            up.release()
            ctx.outcome = "client_closed"
            return resp
        try:
            async for chunk in up.content.iter_any():
                if ctx.first_byte_at is None:
                    ctx.first_byte_at = time.perf_counter()
                try:
                    await resp.write(chunk)
                except ConnectionError:
                    up.close()
                    ctx.outcome = "client_closed"
                    return resp
                ctx.response_bytes += len(chunk)
                tap.feed(chunk)
        except asyncio.CancelledError:
            # The server is shutting down past its grace period; it closes the client side.
            up.close()
            ctx.outcome = "client_closed"
            raise
        except (TimeoutError, aiohttp.ClientError, ConnectionError) as e:
            # Returning normally would let aiohttp end the response cleanly: reset instead.
            log.warning("request %s: upstream %s failed mid-stream: %r; aborting client", ctx.id, self.name, e)
            up.close()
            ctx.outcome = "aborted"
            await abort_client(request)
            return resp
        up.release()
        if not tap.summary.stopped and tap.summary.error_type is None:
            # A clean end without message_stop is a truncation: never pass it on as complete.
            log.warning("request %s: upstream %s ended the stream without message_stop; aborting client", ctx.id, self.name)
            ctx.outcome = "aborted"
            await abort_client(request)
            return resp
        if tap.summary.error_type is not None:
            ctx.outcome = "upstream_error"
        await resp.write_eof()
        return resp
