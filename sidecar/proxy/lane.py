"""The fast path: plain Messages requests read by the sidecar instead of aiohttp's server.

aiohttp's server spends about 110 us more CPU per request than a bare httptools protocol on
a 76 KB body (`python bench/servercost.py`): the body is fed through a StreamReader, a Request
is built, routed and passed down the middleware chain. A plain `POST /v1/messages` needs none of that.
The lane finds the end of the head, parses the head with httptools, slices the body out of
the bytes received, and runs the app's middlewares (the ingress checks) and the messages
handler on a `LaneRequest`; aiohttp's own response classes write the answer through a
StreamWriter on the same connection, so the bytes on the wire are aiohttp's.

What the lane takes: HTTP/1.1, `POST` to a path in the app's FAST_PATHS (exactly, with an
optional query), one Host, one Content-Length within the body cap, no Transfer-Encoding,
Content-Encoding, Expect or Upgrade, `Connection` absent or keep-alive, header bytes the
listener accepts. Anything else, and a head or body that stalls, is handed to aiohttp exactly
as received, before the lane acted on any of it; the connection then stays with aiohttp.
Requests on one connection are answered in order; pipelined ones wait in the buffer.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import httptools
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11
from aiohttp.http_writer import StreamWriter
from multidict import CIMultiDict, CIMultiDictProxy, istr

from sidecar.errors import InvalidRequest

log = logging.getLogger(__name__)

LaneHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024  # a longer head goes to aiohttp, which answers it
STALL_SECONDS = 0.25  # a body incomplete this long after its last bytes goes to aiohttp
HOLD_BYTES = 1 << 20  # pipelined bytes held while a request runs before reading pauses
# The target: the path, then an optional query of RFC 3986 query characters.
_TARGET = re.compile(rb"([^?]*)(?:\?([A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*))?")
# A control byte anywhere in a head (CR and LF end its lines, a tab may sit in a value):
# such a head is the listener's to refuse (check_header_bytes), so aiohttp's path takes it.
_HEAD_TEXT = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))  # what else a head may hold


class _Head:
    """A request head as httptools reports it; `ends` counts where httptools saw a head end
    and `extra` whatever it read past it (a head cut elsewhere than llhttp cuts it)."""

    __slots__ = ("ends", "extra", "raw", "url")

    def __init__(self) -> None:
        self.url = b""
        self.raw: list[tuple[bytes, bytes]] = []
        self.ends = 0
        self.extra = False

    def on_headers_complete(self) -> None:
        self.ends += 1

    def on_body(self, body: bytes) -> None:
        self.extra = True

    def on_message_begin(self) -> None:
        if self.ends:
            self.extra = True

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw.append((name, value))


class _Parsed:
    """A head the lane takes."""

    __slots__ = ("handler", "headers", "host", "length", "path", "path_qs", "raw", "size")

    def __init__(
        self,
        handler: LaneHandler,
        path: str,
        path_qs: str,
        raw: tuple[tuple[bytes, bytes], ...],
        headers: CIMultiDictProxy[str],
        length: int,
        size: int,
        host: str,
    ) -> None:
        self.handler = handler
        self.path = path
        self.path_qs = path_qs
        self.raw = raw
        self.headers = headers
        self.length = length  # of the body
        self.size = size  # of the head
        self.host = host


def read_head(head: bytes, paths: dict[bytes, LaneHandler], max_body: int) -> _Parsed | None:
    """The request `head` (ending in CRLF CRLF) if the lane takes it, else None."""
    got = _Head()
    parser = httptools.HttpRequestParser(got)
    try:
        parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # aiohttp answers a malformed head, or an upgrade
    if got.ends != 1 or got.extra:
        return None  # llhttp ends this head elsewhere (e.g. bare LF lines): aiohttp's path reads it
    if parser.get_method() != b"POST" or parser.get_http_version() != "1.1":
        return None
    target = _TARGET.fullmatch(got.url)
    if target is None or (handler := paths.get(target.group(1))) is None:
        return None
    raw = tuple(got.raw)
    if head.translate(None, _HEAD_TEXT):  # a control byte is left
        return None  # aiohttp's path answers it with the envelope
    if not head.isascii():
        try:
            check_header_bytes(raw)
        except InvalidRequest:
            return None  # as above
    names = _NAMES
    headers = CIMultiDict([(names.get(k) or _name(k), v.decode()) for k, v in raw])
    length = headers.getall("content-length", ())
    host = headers.getall("host", ())
    if len(length) != 1 or len(host) != 1 or not length[0].isdigit() or int(length[0]) > max_body:
        return None
    if "transfer-encoding" in headers or "content-encoding" in headers or "expect" in headers or "upgrade" in headers:
        return None  # a body framed or coded otherwise, or something to do before it
    connection = headers.get("connection")
    if connection is not None and connection.strip().lower() != "keep-alive":
        return None
    path = target.group(1).decode()
    path_qs = got.url.decode() if target.group(2) else path  # an empty query is dropped, as yarl drops it
    return _Parsed(handler, path, path_qs, raw, CIMultiDictProxy(headers), int(length[0]), len(head), host[0])


_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


# Header names as aiohttp's parser spells them: a name hdrs knows in its canonical spelling
# (any case on the wire), another as sent; memoised by the bytes sent, bounded.
_KNOWN = {str(v).lower().encode(): v for v in vars(hdrs).values() if isinstance(v, istr)}
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 512


def _name(raw: bytes) -> str:
    name = _KNOWN.get(raw.lower()) or istr(raw.decode())
    if len(raw) <= 64:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[raw] = name
    return name


def check_header_bytes(raw: tuple[tuple[bytes, bytes], ...]) -> None:
    """Refuse a header value with a control byte or bytes that are not UTF-8: the upstream
    head, the cache key, the ledger and the logs need text (valid UTF-8 goes upstream exactly
    as sent). Checked before aiohttp routes the request or answers its Expect."""
    values = b"\t".join(
        v for _, v in raw
    )  # one scan for all (a tab is allowed, and breaks no UTF-8 sequence)
    if _CONTROL.search(values) or not _utf8(values):
        name = next(n for n, v in raw if _CONTROL.search(v) or not _utf8(v))
        shown = name.decode("ascii", "backslashreplace")[:64]
        raise InvalidRequest(f"header {shown!r} holds a control byte or bytes that are not UTF-8")


def _utf8(value: bytes) -> bool:
    if value.isascii():
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Url:
    __slots__ = ("raw_path_qs",)

    def __init__(self, raw_path_qs: str) -> None:
        self.raw_path_qs = raw_path_qs


class _Match:
    __slots__ = ()
    http_exception = None  # a fast path always names a route


_MATCH = _Match()


class LaneHost(Protocol):
    """What the lane needs of its connection (sidecar.proxy.listener.Connection, an aiohttp
    RequestHandler: the StreamWriter writes through it)."""

    transport: asyncio.Transport | None
    head_since: float | None
    lane: Lane | None
    peer: str
    _close: bool
    _force_close: bool
    _loop: asyncio.AbstractEventLoop

    def answered(self) -> None: ...
    def force_close(self) -> None: ...
    def hand_over(self, data: bytes) -> None: ...
    def head_started(self) -> None: ...
    def fast_served(self) -> None: ...
    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse: ...


class LaneRequest:
    """What the ingress middleware and the messages handler read of a request, for one the
    lane parsed; aiohttp's responses prepare on it as on their own request."""

    __slots__ = (
        "_body",
        "_payload_writer",
        "_state",
        "app",
        "content_length",
        "headers",
        "host",
        "path",
        "protocol",
        "raw_headers",
        "rel_url",
        "remote",
        "transport",
    )  # fmt: skip
    method = "POST"
    version = HttpVersion11
    keep_alive = True
    match_info = _MATCH

    def __init__(
        self,
        conn: LaneHost,
        app: web.Application,
        parsed: _Parsed,
        body: bytes,
        writer: StreamWriter,
    ) -> None:
        self.app = app
        self.raw_headers = parsed.raw
        self.headers = parsed.headers
        self.path = parsed.path
        self.rel_url = _Url(parsed.path_qs)
        self.host = parsed.host
        self.remote = conn.peer
        self.content_length = parsed.length
        self.protocol = conn
        self.transport = conn.transport
        self._payload_writer = writer
        self._body = body
        self._state: dict[Any, Any] = {}

    @property
    def task(self) -> asyncio.Task[Any] | None:
        return asyncio.current_task()

    async def read(self) -> bytes:
        return self._body

    @property
    def writer(self) -> StreamWriter:
        return self._payload_writer

    def get(self, key: Any, default: Any = None) -> Any:
        return self._state.get(key, default)

    def __getitem__(self, key: Any) -> Any:
        return self._state[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._state[key] = value

    def __contains__(self, key: Any) -> bool:
        return key in self._state

    def clone(self, *, headers: CIMultiDict[str]) -> LaneRequest:
        """This request with other headers (the ingress drops the local token's)."""
        twin = object.__new__(LaneRequest)
        for slot in LaneRequest.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin.headers = CIMultiDictProxy(CIMultiDict(headers))
        twin.raw_headers = tuple((k.encode(), v.encode()) for k, v in twin.headers.items())
        twin._state = dict(self._state)
        return twin

    async def _prepare_hook(self, response: web.StreamResponse) -> None:
        signal = self.app.on_response_prepare
        if signal:
            me: Any = self  # the subscribers read what a web.Request has of it
            await signal.send(me, response)


class Lane:
    """One connection's fast path: buffers what arrives, answers the requests it takes, and
    hands the connection to aiohttp at the first one it does not."""

    def __init__(
        self, conn: LaneHost, app: web.Application, paths: dict[bytes, LaneHandler], max_body: int
    ) -> None:
        self.conn = conn
        self.app = app
        self.paths = paths
        self.max_body = max_body
        self.buf = bytearray()  # bytes received and not yet part of a request being answered
        self.watch: httptools.HttpRequestParser | None = None  # reads an incomplete head as it arrives
        self.watched = 0  # how much of buf it read (and was searched for the head's end)
        self.parsed: _Parsed | None = None  # the head of the request being received
        self.task: asyncio.Task[None] | None = None  # the request being answered
        self.paused = False
        self._stall: asyncio.TimerHandle | None = None

    # ---- state, as the listener's deadlines and eviction see it

    def idle(self) -> bool:
        """Nothing buffered and nothing running: the next byte starts a head."""
        return not self.buf and self.task is None

    def waiting_for_head(self) -> bool:
        """Idle, or in the middle of a head."""
        return self.task is None and self.parsed is None

    # ---- bytes in

    def feed(self, data: bytes) -> bytes | None:
        """Take `data`; None when the lane keeps it, else every byte the lane held, to hand
        to aiohttp (the lane is then done with this connection)."""
        if self.task is None and not self.buf:
            return self._fresh(data)
        self.buf += data
        if self.task is not None:
            if len(self.buf) > HOLD_BYTES and not self.paused and self.conn.transport is not None:
                self.paused = True
                self.conn.transport.pause_reading()
            return None
        return self._advance()

    def _fresh(self, data: bytes) -> bytes | None:
        """`data` starts a request. The usual case, a whole request in one read, is answered
        from `data` itself (the body copied once); anything else is buffered and read on."""
        end = data.find(HEAD_END)
        parsed = read_head(data[: end + 4], self.paths, self.max_body) if end >= 0 else None
        if parsed is not None:
            self.conn.head_since = None  # the head is in: the header deadline is met
            need = parsed.size + parsed.length
            if len(data) >= need:
                if len(data) > need:
                    self.buf += data[need:]  # pipelined: the next request waits for this one's answer
                self._start(parsed, data[parsed.size : need])
                return None
            self.parsed = parsed
        self.buf += data
        return self._advance()

    def _advance(self) -> bytes | None:
        buf = self.buf
        parsed = self.parsed
        if parsed is None:
            end = buf.find(HEAD_END, max(0, self.watched - 3))
            if end < 0:
                return self._incomplete()
            self.watched = 0
            self.watch = None
            parsed = read_head(bytes(buf[: end + 4]), self.paths, self.max_body)
            if parsed is None:
                return self._give_up()
            self.parsed = parsed
            self.conn.head_since = None  # the head is in: the header deadline is met
        need = parsed.size + parsed.length
        if len(buf) < need:
            self._arm_stall()
            return None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        body = bytes(memoryview(buf)[parsed.size : need])
        del buf[:need]
        self.parsed = None
        self._start(parsed, body)
        return None

    def _incomplete(self) -> bytes | None:
        """A head still arriving: kept, unless it is too long or llhttp already refuses it
        (aiohttp then answers it as soon as it would have)."""
        buf = self.buf
        if len(buf) > MAX_HEAD:
            return self._give_up()
        if self.watch is None:
            self.watch = httptools.HttpRequestParser(_Head())
        try:
            self.watch.feed_data(bytes(buf[self.watched :]))
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return self._give_up()
        self.watched = len(buf)
        return None

    def _start(self, parsed: _Parsed, body: bytes) -> None:
        self.conn.fast_served()
        self.task = asyncio.get_running_loop().create_task(self._serve(parsed, body))

    def _give_up(self) -> bytes:
        raw = bytes(self.buf)
        self.buf = bytearray()
        self.parsed = None
        self.watched = 0
        self.watch = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self.conn.lane = None
        return raw

    def _arm_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
        self._stall = asyncio.get_running_loop().call_later(STALL_SECONDS, self._stalled)

    def _stalled(self) -> None:
        self._stall = None
        conn = self.conn
        if self.task is None and self.parsed is not None and conn.transport is not None and conn.lane is self:
            conn.hand_over(self._give_up())  # aiohttp reads the rest, with its body deadlines

    def lost(self) -> None:
        """The connection closed."""
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self.buf = bytearray()

    # ---- answering

    async def _serve(self, parsed: _Parsed, body: bytes) -> None:
        conn = self.conn
        resp: web.StreamResponse | None = None
        request = LaneRequest(conn, self.app, parsed, body, StreamWriter(cast(Any, conn), conn._loop))
        req: Any = request  # what the handlers read of a web.Request (see LaneRequest)
        try:
            try:
                resp = await parsed.handler(req)
            except (ConnectionError, asyncio.CancelledError):
                raise
            except Exception as exc:  # what aiohttp's server does with an escaped error: a 500
                resp = conn.handle_error(req, 500, exc)
            if not resp.prepared:
                await resp.prepare(req)
                await resp.write_eof()
        except ConnectionError:
            resp = None  # the client left
        except asyncio.CancelledError:
            conn.force_close()
            raise
        finally:
            self.task = None
        self._done(resp is not None and bool(resp.keep_alive))

    def _done(self, keep_alive: bool) -> None:
        conn = self.conn
        if not keep_alive or conn._close or conn._force_close or conn.transport is None:
            conn.force_close()
            return
        conn.answered()
        if self.paused and conn.transport is not None:
            self.paused = False
            conn.transport.resume_reading()
        if self.buf:
            rest = self._advance()
            if rest is not None:
                conn.hand_over(rest)
            elif self.task is None and self.parsed is None:
                conn.head_started()  # a pipelined head, still incomplete
