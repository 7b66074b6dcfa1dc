"""A TCP relay that records the raw bytes each side sent, and a parser for HTTP/1.1 requests.

Tests put it between a client and the sidecar (or the sidecar and an upstream) to see
exactly what crossed the wire, independently of what either party says it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from sidecar.tasks import TaskSet


@dataclass
class Connection:
    """The bytes of one relayed connection, in each direction."""

    upstream: bytearray = field(default_factory=bytearray)
    downstream: bytearray = field(default_factory=bytearray)


@dataclass
class RawRequest:
    """One HTTP/1.1 request as it was on the wire."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


def _read_message(raw: bytes, pos: int, has_body: bool) -> tuple[str, list[tuple[str, str]], bytes, int] | None:
    """One HTTP/1.1 message at `pos`: start line, headers, de-chunked body, next position."""
    end = raw.find(b"\r\n\r\n", pos)
    if end < 0:
        return None
    lines = raw[pos:end].decode("latin-1").split("\r\n")
    headers = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
    get = {k.lower(): v for k, v in headers}.get
    pos = end + 4
    if not has_body:
        return lines[0], headers, b"", pos
    if (get("transfer-encoding") or "").lower() == "chunked":
        body = bytearray()
        while True:
            nl = raw.find(b"\r\n", pos)
            if nl < 0:
                return lines[0], headers, bytes(body), len(raw)  # cut mid-body
            size = int(raw[pos:nl].split(b";")[0], 16)
            pos = nl + 2
            if size == 0:
                pos = raw.index(b"\r\n", pos) + 2
                break
            body += raw[pos : pos + size]
            pos += size + 2
        return lines[0], headers, bytes(body), pos
    n = int(get("content-length") or 0)
    return lines[0], headers, raw[pos : pos + n], pos + n


def parse_requests(raw: bytes) -> list[RawRequest]:
    """Split a client-to-server byte stream into requests (Content-Length or chunked bodies)."""
    out: list[RawRequest] = []
    pos = 0
    while pos < len(raw) and (msg := _read_message(raw, pos, True)) is not None:
        start, headers, body, pos = msg
        method, target, _ = start.split(" ", 2)
        out.append(RawRequest(method, target, headers, body))
    return out


@dataclass
class RawResponse:
    """One HTTP/1.1 response as it was on the wire (body de-chunked)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header `name` (case-insensitive)."""
        low = name.lower()
        return next((v for k, v in self.headers if k.lower() == low), None)


def parse_responses(raw: bytes, methods: list[str]) -> list[RawResponse]:
    """Split a server-to-client byte stream into responses; `methods` of the requests in order
    (a response to HEAD has no body)."""
    out: list[RawResponse] = []
    pos = 0
    for method in methods:
        msg = _read_message(raw, pos, method != "HEAD")
        if msg is None:
            break
        start, headers, body, pos = msg
        out.append(RawResponse(int(start.split(" ", 2)[1]), headers, body))
    return out


@dataclass
class Answer:
    """One HTTP/1.x response read off a socket (header names lower-cased)."""

    status: int
    headers: dict[str, str]
    body: bytes



def parse_answers(data: bytes) -> tuple[list[Answer], bytes]:
    """HTTP/1.x responses in `data`, read until the server closed the connection (a body
    with neither Content-Length nor chunking runs to the end), and whatever did not parse as
    one. Unlike `parse_responses`, it needs no request methods and keeps the garbage."""
    out: list[Answer] = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0 or not data.startswith(b"HTTP/1."):
            break
        lines = data[:end].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            break
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        rest = data[end + 4 :]
        if 100 <= status < 200 or status in (204, 304):
            body = b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body, rest = _dechunk(rest)
        elif "content-length" in headers:
            n = int(headers["content-length"])
            body, rest = rest[:n], rest[n:]
        else:
            body, rest = rest, b""
        out.append(Answer(status, headers, body))
        data = rest
    return out, data


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    """A chunked body at the start of `data`, and what follows it."""
    body = b""
    while True:
        eol = data.find(b"\r\n")
        if eol < 0:
            return body, b""
        size = int(data[:eol].split(b";")[0], 16)
        data = data[eol + 2 :]
        if size == 0:
            end = data.find(b"\r\n")
            return body, data[end + 2 :] if end >= 0 else b""
        body += data[:size]
        data = data[size + 2 :]


def is_envelope(a: Answer) -> bool:
    """True when `a` is the Anthropic error envelope with the sidecar's own message."""
    try:
        data = json.loads(a.body)
    except ValueError:
        return False
    err = data.get("error") if isinstance(data, dict) else None
    return (
        data.get("type") == "error"
        and isinstance(err, dict)
        and isinstance(err.get("type"), str)
        and str(err.get("message", "")).startswith("claude-sidecar: ")
    )


class TcpRecorder:
    """Listens on 127.0.0.1 and relays every connection to `target_port`, recording both ways."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks = TaskSet()

    @property
    def port(self) -> int:
        """The port clients connect to."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def requests(self) -> list[RawRequest]:
        """Every request seen so far, connection by connection."""
        return [r for c in self.connections for r in parse_requests(bytes(c.upstream))]

    def exchanges(self) -> list[tuple[RawRequest, RawResponse]]:
        """Every (request, response) pair seen so far."""
        out: list[tuple[RawRequest, RawResponse]] = []
        for c in self.connections:
            reqs = parse_requests(bytes(c.upstream))
            resps = parse_responses(bytes(c.downstream), [r.method for r in reqs])
            out.extend(zip(reqs, resps, strict=False))
        return out

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def close(self) -> None:
        """Stop listening and end every relay."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await self._tasks.close()

    async def __aenter__(self) -> TcpRecorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        conn = Connection()
        self.connections.append(conn)
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            cw.close()
            return
        up = self._tasks.spawn(self._pipe(cr, uw, conn.upstream), "recorder-up")
        down = self._tasks.spawn(self._pipe(ur, cw, conn.downstream), "recorder-down")
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        # One side closed: close both, so an abort on one side reaches the other.
        for w in (uw, cw):
            w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, log: bytearray) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                log += data
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()
