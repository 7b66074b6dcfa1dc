"""Relaying an upstream Call to the client: SSE event by event, anything else whole.

Once the first byte went to the client, an upstream failure aborts the client connection
(TCP reset) instead of ending it cleanly, because Claude Code accepts a clean end after a
finished block as a complete, truncated answer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
from aiohttp import web
from multidict import CIMultiDict

from sidecar.errors import StreamBroken
from sidecar.gateway.unified import UPSTREAM_PREFIX
from sidecar.pipeline import EventFilter, RequestContext
from sidecar.protocol import sse
from sidecar.protocol.anthropic import SSETap
from sidecar.providers.base import Call

log = logging.getLogger(__name__)

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


def sidecar_headers(ctx: RequestContext) -> dict[str, str]:
    """The sidecar's own response headers for `ctx`."""
    out = {"x-sidecar-request-id": ctx.id}
    if ctx.provider:
        out["x-sidecar-upstream"] = f"{ctx.provider}/{ctx.upstream_model or ''}".rstrip("/")
    if ctx.route:
        out["x-sidecar-route"] = ctx.route
    out.update(ctx.response_headers)
    if ctx.unified_headers is not None and 0 < ctx.status < 400:
        out.update(ctx.unified_headers)
    return out


def response_headers(call: Call, ctx: RequestContext) -> CIMultiDict[str]:
    """The headers the client gets for `call`."""
    out: CIMultiDict[str] = CIMultiDict(call.headers)
    if ctx.unified_headers is not None and call.status < 400:
        # The sidecar's budget is what this user should see, not the upstream's own quota.
        for k in [k for k in out if k.lower().startswith(UPSTREAM_PREFIX)]:
            out.popall(k, None)
    if "content-type" not in out:
        out["content-type"] = "text/event-stream; charset=utf-8" if call.stream else "application/json"
    if call.stream:
        out.setdefault("cache-control", "no-cache")
    for k, v in sidecar_headers(ctx).items():
        out[k] = v
    return out


async def relay(
    ctx: RequestContext,
    request: web.Request,
    call: Call,
    prefix: list[bytes] | None = None,
    chunks: AsyncIterator[bytes] | None = None,
    filters: list[EventFilter] | None = None,
) -> web.StreamResponse:
    """Copy `call` to the client through the stages' response `filters`. A router that peeked
    at a stream passes the chunks it read (`prefix`) and the iterator it read them from
    (`chunks`), which the relay continues."""
    ctx.status = call.status
    ctx.upstream_request_id = call.request_id
    filters = filters or []
    if call.stream:
        return await _relay_stream(ctx, request, call, prefix or [], chunks or call.chunks(), filters)
    body = await call.read()
    ctx.status = call.status  # a translated answer may map its status while being read
    ctx.first_byte_at = time.perf_counter()
    msg: Any = None
    ctype = next((v for k, v in call.headers if k.lower() == "content-type"), "application/json")
    if ctype.startswith("application/json"):
        try:
            msg = msgspec.json.decode(body)
        except msgspec.DecodeError:
            msg = None
        if isinstance(msg, dict):
            ctx.summary.take_message(msg)
            if filters:
                for f in filters:
                    msg = f.on_message(msg)
                if not all(f.passive for f in filters):
                    body = msgspec.json.encode(msg)
    for f in filters:
        f.on_end(call.status < 400 and ctx.summary.stopped and ctx.summary.error_type is None)
    ctx.response_bytes = len(body)
    if call.status >= 400:
        ctx.outcome = "upstream_error"
    return web.Response(status=call.status, body=body, headers=response_headers(call, ctx))


class _Filtered:
    """Runs the response filters over a stream: parse events, filter, re-encode. When every
    filter is `passive` (only observes, e.g. the cache's collector) the bytes pass unchanged."""

    def __init__(self, filters: list[EventFilter]) -> None:
        self.filters = filters
        self.reader = sse.SSEReader()
        self.passive = all(f.passive for f in filters)
        # Passive filters that read the raw bytes themselves (`on_bytes`, the cache's
        # collector) need nothing parsed or re-encoded here.
        taps = [f.on_bytes for f in filters] if self.passive else []
        self.taps: list[Callable[[bytes], None]] = [t for t in taps if t is not None] if all(taps) else []

    def feed(self, chunk: bytes) -> bytes:
        if self.taps:
            for tap in self.taps:
                tap(chunk)
            return chunk
        out: list[bytes] = []
        for ev in self.reader.feed(chunk):
            try:
                data = ev.json()
            except msgspec.DecodeError:
                data = None
            if not isinstance(data, dict):
                out.append(b"event: " + ev.event.encode() + b"\ndata: " + ev.data.encode() + b"\n\n")
                continue
            events: list[tuple[str, dict[str, Any]]] = [(ev.event, data)]
            for f in self.filters:
                events = [e for name, d in events for e in f.on_event(name, d)]
            if not self.passive:
                out.extend(sse.encode(name, d) for name, d in events)
        return chunk if self.passive else b"".join(out)


async def _relay_stream(
    ctx: RequestContext,
    request: web.Request,
    call: Call,
    prefix: list[bytes],
    chunks: AsyncIterator[bytes],
    filters: list[EventFilter],
) -> web.StreamResponse:
    resp = web.StreamResponse(status=call.status, headers=response_headers(call, ctx))
    tap = SSETap()
    ctx.summary = tap.summary
    filt = _Filtered(filters) if filters else None
    try:
        await resp.prepare(request)
    except (ConnectionError, RuntimeError):
        call.close()
        ctx.outcome = "client_closed"
        return resp

    async def source() -> AsyncIterator[bytes]:
        for c in prefix:
            yield c
        async for c in chunks:
            yield c

    finished = False  # the final event (message_stop or error) was seen and the request completed
    try:
        async for chunk in source():
            if ctx.first_byte_at is None:
                ctx.first_byte_at = time.perf_counter()
            tap.feed(chunk)
            out = filt.feed(chunk) if filt is not None else chunk
            if not out:
                continue
            ctx.response_bytes += len(out)
            if not finished and (tap.summary.stopped or tap.summary.error_type is not None) and _client_there(request):
                finished = True
                _finish(ctx, tap, filters)  # before the chunk that makes the answer whole goes out
            try:
                await resp.write(out)
            except ConnectionError:
                call.close()
                if not finished:
                    ctx.outcome = "client_closed"
                    _end(ctx, filters, False)
                return resp
    except asyncio.CancelledError:
        # The server is shutting down past its grace period; it closes the client side.
        call.close()
        if not finished:
            ctx.outcome = "client_closed"
            _end(ctx, filters, False)
        raise
    except StreamBroken as e:
        # Returning normally would let aiohttp end the response cleanly: reset instead.
        log.warning("request %s: %s; aborting client", ctx.id, e)
        if not finished:
            ctx.outcome = "aborted"
            _end(ctx, filters, False)
        await abort_client(request)
        return resp
    if not finished:
        if not tap.summary.stopped and tap.summary.error_type is None:
            # A clean end without message_stop is a truncation: never pass it on as complete.
            log.warning("request %s: upstream %s ended the stream without message_stop; aborting client", ctx.id, ctx.provider)
            ctx.outcome = "aborted"
            _end(ctx, filters, False)
            await abort_client(request)
            return resp
        _finish(ctx, tap, filters)
    await resp.write_eof()
    return resp


def _client_there(request: web.Request) -> bool:
    """Whether the client's connection is still open (a client gone already gets no answer)."""
    transport = request.transport
    return transport is not None and not transport.is_closing()


def _finish(ctx: RequestContext, tap: SSETap, filters: list[EventFilter]) -> None:
    """The stream's final event is about to go out: end the filters and complete the request
    (metered, audited, journaled), so an answer the client has whole is always recorded."""
    if tap.summary.error_type is not None:
        ctx.outcome = "upstream_error"
    _end(ctx, filters, tap.summary.error_type is None)
    ctx.finish()


def _end(ctx: RequestContext, filters: list[EventFilter], complete: bool) -> None:
    for f in filters:
        try:
            f.on_end(complete)
        except Exception:
            log.exception("response filter %s failed at the end of request %s", type(f).__name__, ctx.id)
