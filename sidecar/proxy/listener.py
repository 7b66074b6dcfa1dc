"""The HTTP listener: aiohttp's server with the sidecar's limits and error envelopes.

aiohttp reads requests without deadlines and answers what it cannot parse in text/plain.
Here each connection (a `Connection`, aiohttp's RequestHandler) gets:

- a header deadline: a request head must be complete `header_timeout_seconds` after its
  first byte, else 408 and close (an idle keep-alive connection is closed after
  `idle_timeout_seconds`: aiohttp's keep-alive timer);
- body deadlines: a body that pauses longer than `body_timeout_seconds`, or is not complete
  `request_timeout_seconds` after its head, fails the handler's read with RequestTimeout (408);
- the Anthropic error envelope for every answer the server itself gives (a malformed head,
  an Expect it cannot meet, an exception that escaped the handlers: 500 with a request id).

The `Listener` (aiohttp's Server) caps concurrent connections. At the cap a new connection
first makes room by closing the connection that waits longest for a head (idle keep-alive
or a slow head), then one whose body stalled; only when every connection is busy with a
request is the newcomer answered 503. So slow clients can never lock out /healthz.

A plain `POST /v1/messages` skips aiohttp's request machinery: the connection's `Lane`
(sidecar/proxy/lane.py) reads it and runs the same middlewares and handler; everything else,
and a connection the lane handed over, is aiohttp's as above.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.web_protocol import RequestHandler

from sidecar.appkeys import FAST_PATHS, RUNTIME, Runtime
from sidecar.errors import InvalidRequest, NotFound, RequestTimeout, RequestTooLarge, SidecarError
from sidecar.ledger.record import new_ulid
from sidecar.proxy.config import ServerConfig
from sidecar.proxy.lane import Lane, LaneHandler, check_header_bytes

log = logging.getLogger(__name__)

# Descriptors the daemon needs besides client connections: the upstream pool (256),
# databases, logs, the event loop. The connection cap is lowered to leave them free.
RESERVED_FDS = 320
MIN_CONNECTIONS = 16
BAD_VERSION = web.RequestKey("sidecar.bad_version", bool)  # the client asked for an unsupported HTTP version


@dataclass(frozen=True)
class Limits:
    """The listener's deadlines (seconds) and caps."""

    header_timeout: float = 30.0
    body_timeout: float = 30.0
    request_timeout: float = 300.0
    idle_timeout: float = 60.0
    max_connections: int = 512
    max_body: int = 64 * 1024 * 1024

    @classmethod
    def from_config(cls, server: ServerConfig) -> Limits:
        """The limits a [server] section sets, the cap lowered to fit the open-file limit."""
        return cls(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            request_timeout=server.request_timeout_seconds,
            idle_timeout=server.idle_timeout_seconds,
            max_connections=fit_to_fd_limit(server.max_connections),
            max_body=server.max_body_bytes,
        )


def fit_to_fd_limit(cap: int) -> int:
    """`cap`, lowered so that cap + RESERVED_FDS fits the soft RLIMIT_NOFILE (logged when lowered)."""
    try:
        import resource  # POSIX only; Windows has no per-process descriptor limit to fit
    except ImportError:
        return cap
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft - RESERVED_FDS >= cap:
        return cap
    fitted = max(MIN_CONNECTIONS, soft - RESERVED_FDS)
    log.warning(
        "server.max_connections = %d does not fit the open-file limit (%d); serving at most %d connections",
        cap, soft, fitted,
    )  # fmt: skip
    return fitted


def envelope_response(err: SidecarError, request_id: str | None = None, *, close: bool = True) -> web.Response:
    """The Anthropic envelope for `err`, on a connection that is closed afterwards (`close`)."""
    headers = {**err.headers, "x-sidecar-request-id": request_id or new_ulid()}
    resp = web.Response(status=err.status, body=err.envelope(), content_type="application/json", headers=headers)
    if close:
        resp.force_close()
    return resp


def raw_envelope(err: SidecarError, reason: str, extra: str = "") -> bytes:
    """A whole HTTP/1.1 answer for `err`, for when there is no request object to answer."""
    body = err.envelope()
    head = (
        f"HTTP/1.1 {err.status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        f"x-sidecar-request-id: {new_ulid()}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode() + body


class Connection(RequestHandler):
    """One client connection: aiohttp's handler plus head/body deadlines and envelopes."""

    def __init__(self, manager: Listener, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.listener = manager
        self.limits = manager.limits
        self.via_unix_socket: bool | None = None  # known once ingress asked (sidecar.proxy.ingress)
        self.opened_at = 0.0
        self.last_rx = 0.0
        self.head_since: float | None = None  # first byte of a head not yet complete
        self.body: Any = None  # the StreamReader of the request being read
        self.body_since = 0.0
        self._watch: asyncio.TimerHandle | None = None
        self._watch_at = 0.0
        self.lane: Lane | None = None  # the fast path, until it hands the connection to aiohttp
        self.peer = ""  # the client's address, as aiohttp's request.remote spells it

    # ---- life cycle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register, then make room (or refuse) when the listener is at its cap."""
        now = self._loop.time()
        self.opened_at = self.last_rx = now
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, (list, tuple)) else str(peer or "")
        if self.listener.fast is not None:
            self.lane = Lane(self, *self.listener.fast)
        self.listener.admit(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the deadline timer with the connection."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self.lane is not None:
            self.lane.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Note when bytes arrive, and when the first byte of a new head did; the fast path
        takes them first while it has the connection."""
        now = self._loop.time()
        self.last_rx = now
        lane = self.lane
        if lane is not None:
            if self._close or self._force_close:
                return  # closing: like aiohttp, read no further requests
            if self.head_since is None and lane.idle():
                self.head_started()
            rest = lane.feed(data)
            if rest is None:
                return
            data = rest  # the lane handed the connection to aiohttp
        if self.head_since is None and self._between_requests():
            self.head_since = now
            self._arm(now + self.limits.header_timeout)
        super().data_received(data)
        if self._messages:
            self.head_since = None

    def hand_over(self, data: bytes) -> None:
        """The fast path gives up the connection: aiohttp reads `data` (all it held) and the rest."""
        self.lane = None
        self.data_received(data)

    def head_started(self) -> None:
        """The first byte of a head arrived (or waits in the fast path's buffer): arm the header deadline."""
        now = self._loop.time()
        self.head_since = now
        self._arm(now + self.limits.header_timeout)

    def answered(self) -> None:
        """The fast path finished a request and keeps the connection: restart the idle timer."""
        loop = self._loop
        close_time = loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            self._keepalive_handle = loop.call_at(close_time, self._process_keepalive)

    def _process_keepalive(self) -> None:
        lane = self.lane
        if lane is not None and not lane.waiting_for_head():  # a request is being read or answered
            self._keepalive_handle = None
            self.answered()
            return
        super()._process_keepalive()

    def close(self) -> None:
        """Close once the request in progress (the fast path's too) is answered."""
        lane = self.lane
        if lane is not None and lane.task is not None:
            self._close = True  # the lane closes after its answer; aiohttp's loop keeps waiting
            return
        super().close()

    def fast_served(self) -> None:
        """The fast path took a request (/healthz reports the count)."""
        self.listener.runtime.fast_path_served += 1

    def busy(self) -> bool:
        """A request is being handled (by aiohttp or the fast path)."""
        return self._request_in_progress or (self.lane is not None and self.lane.task is not None)

    def busy_task(self) -> asyncio.Task[Any] | None:
        """The task answering the request in progress."""
        lane = self.lane
        if lane is not None and lane.task is not None:
            return lane.task
        return self._task_handler

    def request_started(self, payload: Any) -> None:
        """A head was parsed: its body (if any) must now arrive in time."""
        self.head_since = None
        self.body = payload
        self.body_since = self._loop.time()
        if not payload.is_eof():
            self._arm(self.body_since + min(self.limits.body_timeout, self.limits.request_timeout))

    def discard_rest(self, linger: float = 0.0) -> None:
        """The request's body will not be read: close after the answer, reading and dropping
        what still arrives for at most `linger` seconds first (so a client still sending gets
        to read the answer before the close, instead of a reset that may discard it)."""
        self._lingering_time = linger

    # ---- state, as eviction and the deadlines see it

    def _between_requests(self) -> bool:
        return not self._messages and not self._request_in_progress and (self.body is None or self.body.is_eof())

    def waiting_for_head(self) -> bool:
        """Idle between requests (keep-alive) or in the middle of a slow head."""
        if self.lane is not None:
            return self.lane.waiting_for_head()
        return self._waiter is not None and not self._waiter.done()

    def body_stalled(self, now: float) -> bool:
        """A request body is being read and nothing arrived for a while."""
        body = self.body
        if body is None or body.is_eof() or not self._request_in_progress:
            return False
        return now - self.last_rx >= min(1.0, self.limits.body_timeout)

    # ---- deadlines

    def _arm(self, when: float) -> None:
        if self._watch is not None and self._watch_at <= when:
            return
        if self._watch is not None:
            self._watch.cancel()
        self._watch_at = when
        self._watch = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        self._watch = None
        if self.transport is None or self._force_close:
            return
        now = self._loop.time()
        if self.head_since is not None:
            deadline = self.head_since + self.limits.header_timeout
            if not self.waiting_for_head():
                pass  # the head completed and a request runs; a pipelined head is checked after it
            elif now >= deadline:
                self.refuse(RequestTimeout(f"the request head did not arrive within {self.limits.header_timeout:g} s"))
                return
            else:
                self._arm(deadline)
        body = self.body
        if body is not None and not body.is_eof() and body.exception() is None:
            deadline = min(self.last_rx + self.limits.body_timeout, self.body_since + self.limits.request_timeout)
            if now >= deadline and not self._request_in_progress:
                self._arm(now + self.limits.body_timeout)  # aiohttp's own bounded drain after an answer
            elif now >= deadline:
                self.discard_rest()
                body.set_exception(
                    RequestTimeout(
                        f"the request body did not arrive in time (a pause over {self.limits.body_timeout:g} s, "
                        f"or more than {self.limits.request_timeout:g} s in all)"
                    )
                )
            else:
                self._arm(deadline)
        if self.head_since is not None and self._watch is None:
            self._arm(now + self.limits.header_timeout)

    def refuse(self, err: SidecarError, reason: str = "Request Timeout", extra: str = "") -> None:
        """Answer `err` outside any request (between requests only) and close."""
        if self.transport is not None and not self.busy():
            with contextlib.suppress(Exception):
                self.transport.write(raw_envelope(err, reason, extra))
        self.force_close()

    def reset(self) -> None:
        """Close with a TCP reset, so the client sees an error rather than a clean end."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._force_close = True
        transport.abort()

    # ---- answers the server gives itself

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A malformed head (400) or an exception that escaped the handlers (500), as an envelope."""
        if request.writer.output_size > 0:
            raise ConnectionError("the answer had started; the connection is closed instead")
        rid = new_ulid()
        if isinstance(exc, ConnectionError):
            log.debug("request %s: the client left: %s", rid, exc)
            err: SidecarError = InvalidRequest("the connection was lost")
        elif status >= 500:
            log.error("request %s (%s %s) failed unexpectedly", rid, request.method, request.path, exc_info=exc)
            err = SidecarError(f"internal error in the sidecar (request {rid}); see its log")
        else:
            first = (message or (str(exc) if exc else "") or "malformed request").strip().splitlines()[0]
            log.debug("refused a malformed request: %s", first)
            err = InvalidRequest(f"malformed HTTP request: {first[:200]}")
            err.status = status if 400 <= status < 500 else 400
        return envelope_response(err, rid)


class Listener(web.Server):
    """aiohttp's Server making `Connection`s, with a cap on how many are open."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: Limits,
        fast: tuple[web.Application, dict[bytes, LaneHandler], int] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["keepalive_timeout"] = limits.idle_timeout
        super().__init__(_enveloped(handler, limits), **kwargs)
        self.limits = limits
        self.refused = 0
        self.evicted = 0
        self.fast = fast  # the fast path's app, handlers by path and body cap (sidecar.proxy.lane)
        runtime = fast[0].get(RUNTIME) if fast is not None else None
        self.runtime = runtime if runtime is not None else Runtime("", 0.0)  # holds the count /healthz reports
        factory = self.request_factory

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> web.BaseRequest:
            bad = message.version not in (HttpVersion10, HttpVersion11)
            if bad:  # answer in HTTP/1.1 (aiohttp would echo "HTTP/0.9" or "HTTP/2.0")
                message = message._replace(version=HttpVersion11, should_close=True)
            request = factory(message, payload, protocol, writer, task)
            if bad:
                request[BAD_VERSION] = True
            if isinstance(protocol, Connection):
                protocol.request_started(payload)
            return request

        self.request_factory = make_request

    @property
    def fast_served(self) -> int:
        """Requests the fast path answered."""
        return self.runtime.fast_path_served

    def __call__(self) -> Connection:
        return Connection(self, loop=self._loop, **self._kwargs)

    def admit(self, conn: Connection) -> None:
        """Make room for `conn` at the cap by closing the idlest connection, or refuse `conn`."""
        if len(self._connections) <= self.limits.max_connections:
            return
        victim = self._victim(conn)
        if victim is not None:
            self.evicted += 1
            if victim.waiting_for_head():
                victim.refuse(RequestTimeout("closed to make room for a new connection (the sidecar is at max_connections)"))
            else:
                victim.discard_rest()
                if victim.body is not None:
                    victim.body.set_exception(RequestTimeout("the request body stalled while the sidecar is at max_connections"))
            return
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning("at max_connections (%d): refused %d connections so far", self.limits.max_connections, self.refused)
        err = SidecarError("too many connections; retry shortly (server.max_connections)")
        err.status, err.error_type = 503, "overloaded_error"
        conn.refuse(err, "Service Unavailable", "retry-after: 1\r\n")

    def _victim(self, newcomer: Connection) -> Connection | None:
        """The connection that waited longest for a head, else the one whose body stalled longest."""
        now = self._loop.time()
        idle: Connection | None = None
        stalled: Connection | None = None
        for c in self._connections:
            if c is newcomer or not isinstance(c, Connection) or c._force_close:
                continue
            if c.waiting_for_head():
                since = c.head_since if c.head_since is not None else c.last_rx
                if idle is None or since < (idle.head_since if idle.head_since is not None else idle.last_rx):
                    idle = c
            elif c.body_stalled(now) and (stalled is None or c.last_rx < stalled.last_rx):
                stalled = c
        return idle or stalled

    def in_progress(self) -> list[Connection]:
        """Connections with a request being handled."""
        return [c for c in self._connections if isinstance(c, Connection) and c.busy()]


def _enveloped(handler: Any, limits: Limits, *, checked: bool = False) -> Any:
    """Wrap the app's handler: what aiohttp raises before the middlewares run (an Expect it
    cannot meet, a method or path it cannot route) becomes an envelope too, and a client that
    asks `Expect: 100-continue` for a body over the cap gets the 413 instead of the go-ahead.
    `checked`: the fast path took the request, so its header bytes are fine and it has no Expect."""

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not checked and (refused := _refused_early(request, limits)) is not None:
            return refused
        try:
            result: web.StreamResponse = await handler(request)
            return result
        except web.HTTPException as e:
            if e.status < 400:
                raise
            err = NotFound(e.text or e.reason) if e.status in (404, 405) else InvalidRequest(e.text or e.reason)
            err.status = e.status
            return envelope_response(err)

    return handle


async def end_unframed_http10(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """An `on_response_prepare` hook: an HTTP/1.0 answer without a length (a stream; 1.0 has no
    chunking) ends with its connection. aiohttp would keep a keep-alive connection open, and
    the client could not tell where the answer ends."""
    if request.version < HttpVersion11 and response.content_length is None:
        response.force_close()


def _refused_early(request: web.BaseRequest, limits: Limits) -> web.Response | None:
    """The answer to a request refused before routing: a header byte the listener refuses, or
    an Expect for a body over the cap (413 instead of the go-ahead)."""
    try:
        check_header_bytes(request.raw_headers)
    except InvalidRequest as e:
        return envelope_response(e, close=False)  # the body is drained; the connection stays usable
    if "expect" in request.headers and (request.content_length or 0) > limits.max_body:
        if isinstance(request.protocol, Connection):
            request.protocol.discard_rest()
        mb = limits.max_body / 1048576
        return envelope_response(RequestTooLarge(f"the request body is larger than {mb:g} MB (server.max_body_mb)"))
    return None


def _fast_handler(app: web.Application, handler: LaneHandler, limits: Limits) -> LaneHandler:
    """`handler` behind the app's middlewares and the listener's envelopes, as aiohttp would
    run it for its route (the fast path skips only the routing)."""
    for middleware in reversed(app.middlewares):
        handler = functools.partial(middleware, handler=handler)
    wrapped: LaneHandler = _enveloped(handler, limits, checked=True)
    return wrapped


class SidecarRunner(web.AppRunner):
    """An AppRunner whose server is a `Listener` with the config's limits."""

    def __init__(self, app: web.Application, server: ServerConfig, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.limits = Limits.from_config(server)
        self.fast_path = server.fast_path
        self._shut_down = False

    async def shutdown(self) -> None:
        """The app's on_shutdown hooks (they end long-lived streams such as the event feed), once."""
        if not self._shut_down:
            self._shut_down = True
            await super().shutdown()

    async def _make_server(self) -> web.Server:
        base = await super()._make_server()
        kwargs = {**base._kwargs}
        fast = None
        app = self.app
        if self.fast_path and (paths := app.get(FAST_PATHS)):
            fast = (app, {p.encode(): _fast_handler(app, h, self.limits) for p, h in paths.items()}, self.limits.max_body)
        return Listener(base.request_handler, limits=self.limits, fast=fast, request_factory=base.request_factory, **kwargs)

    @property
    def listener(self) -> Listener:
        """The running Listener."""
        assert isinstance(self.server, Listener)
        return self.server


async def drain(runner: SidecarRunner, grace: float) -> int:
    """Stop accepting, let requests in progress finish within `grace` seconds in all, then
    reset the connections of those still running. Returns how many were reset."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    for site in list(runner.sites):
        await site.stop()
    server = runner.server
    if not isinstance(server, Listener):
        return 0
    server.pre_shutdown()  # idle keep-alive connections close now; busy ones after their answer
    await runner.shutdown()  # on_shutdown: the event feed's streams end instead of using up the grace
    # A busy connection's task ends after its answer (pre_shutdown asked it to close).
    tasks = {t for c in server.in_progress() if (t := c.busy_task()) is not None}
    if tasks:
        await asyncio.wait(tasks, timeout=max(0.0, deadline - loop.time()))
    late = server.in_progress()
    for conn in late:
        conn.reset()
    if late:
        log.warning("reset %d connections still busy after the %.1f s shutdown grace", len(late), grace)
    return len(late)
