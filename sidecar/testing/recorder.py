"""A TCP relay that records the raw bytes each side sent, and a parser for HTTP/1.1 requests.

Tests put it between a client and the sidecar (or the sidecar and an upstream) to see
exactly what crossed the wire, independently of what either party says it sent.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def parse_requests(raw: bytes) -> list[RawRequest]:
    """Split a client-to-server byte stream into requests (Content-Length or chunked bodies)."""
    out: list[RawRequest] = []
    pos = 0
    while pos < len(raw):
        end = raw.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = raw[pos:end].decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
        pos = end + 4
        req = RawRequest(method, target, headers, b"")
        if (req.header("transfer-encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                nl = raw.index(b"\r\n", pos)
                size = int(raw[pos:nl].split(b";")[0], 16)
                pos = nl + 2
                if size == 0:
                    pos = raw.index(b"\r\n", pos) + 2
                    break
                body += raw[pos : pos + size]
                pos += size + 2
            req.body = bytes(body)
        else:
            n = int(req.header("content-length") or 0)
            req.body = raw[pos : pos + n]
            pos += n
        out.append(req)
    return out


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
