"""A minimal, fast fake Anthropic upstream for benchmarks: raw asyncio protocol + uvloop.

`sidecar.testing.fake_anthropic` is the faithful fake for tests (scripting, recording,
failure modes); it runs on aiohttp's server and records every request, so it is neither
fast enough nor flat enough in memory to be a baseline. This one answers the same wire
format and nothing else:

* ``POST /v1/messages``: a JSON message, or (``"stream": true``) an SSE stream of
  message_start, content_block_start, ping, N content_block_delta (one per word),
  content_block_stop, message_delta, message_stop, each event written as its own
  HTTP chunk, with usage (input tokens ~ body bytes / 4);
* ``POST /v1/messages/count_tokens``, ``GET /v1/models``, ``HEAD /`` and ``GET /``;
* request headers it obeys (they pass through a proxy untouched):
  ``x-bench-delay-ms: 20`` waits that long between stream events, and
  ``x-bench-verify: 1`` answers with ``x-bench-body-crc32`` / ``x-bench-body-len`` of the
  request body as received.

Replies are rendered once per (model, input tokens, stream) and cached.

    python bench/fake_upstream.py --port 0 [--words 50]   # prints "listening on http://127.0.0.1:PORT"
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import zlib
from typing import Any

import msgspec

from sidecar.lifecycle import stop_on_signals
from sidecar.testing import anthropic_sse as sse

ORGANIZATION_ID = "7e6b0f9c-3d1a-4c5e-9b2f-0a1d2c3e4f50"
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()
_MAX_HEAD = 64 * 1024


class _Head(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None


_decode_head = msgspec.json.Decoder(_Head).decode


class Replies:
    """Pre-rendered reply bytes, keyed by (model, input tokens, stream)."""

    def __init__(self, words: int) -> None:
        text = " ".join(_LOREM[i % len(_LOREM)] for i in range(words))
        self.blocks = [sse.text_block(text)]
        self.content = sse.content_events(self.blocks)
        self.output_tokens = max(1, words)
        self._cache: dict[tuple[str, int, bool], Any] = {}
        self._seq = 0

    def get(self, model: str, input_tokens: int, stream: bool) -> Any:
        key = (model, input_tokens, stream)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self._seq += 1
        msg_id = f"msg_01BENCH{self._seq:016d}"
        usage = sse.Usage(input_tokens, self.output_tokens)
        if stream:
            events = sse.stream_events(msg_id, model, self.content, usage, "end_turn")
            hit = [b"%x\r\n%b\r\n" % (len(e), e) for e in events]
        else:
            hit = sse.encode_json(sse.message_body(msg_id, model, self.blocks, usage, "end_turn"))
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = hit
        return hit


class Headers:
    """The response header block an Anthropic reply carries (rate limits, request id)."""

    def __init__(self) -> None:
        self._second = -1
        self._common = b""
        self._n = 0

    def common(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            reset = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 1))
            date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now))
            lines = [f"date: {date}", f"anthropic-organization-id: {ORGANIZATION_ID}"]
            for kind, limit, used in (
                ("requests", 4000, 1),
                ("input-tokens", 2_000_000, 0),
                ("output-tokens", 400_000, 0),
                ("tokens", 2_400_000, 0),
            ):
                lines += [
                    f"anthropic-ratelimit-{kind}-limit: {limit}",
                    f"anthropic-ratelimit-{kind}-remaining: {limit - used}",
                    f"anthropic-ratelimit-{kind}-reset: {reset}",
                ]
            self._common = "".join(line + "\r\n" for line in lines).encode()
        return self._common

    def request_id(self) -> bytes:
        self._n += 1
        return b"request-id: req_011CBENCH%016d\r\n" % self._n


class _Request:
    __slots__ = ("body", "delay", "keep_alive", "method", "path", "verify")

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.body = b""
        self.delay = 0.0
        self.verify = False
        self.keep_alive = True


class Server:
    """Shared state of every connection."""

    def __init__(self, words: int) -> None:
        self.replies = Replies(words)
        self.headers = Headers()
        self.tasks: set[asyncio.Task[None]] = set()
        models = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2026-01-01T00:00:00Z"}
            for m in ("claude-opus-4-8", "claude-sonnet-5", "claude-haiku-4-5-20251001")
        ]
        self.models_body = sse.encode_json(
            {"data": models, "has_more": False, "first_id": models[0]["id"], "last_id": models[-1]["id"]}
        )


class Conn(asyncio.Protocol):
    """One HTTP/1.1 keep-alive connection; requests are answered in order."""

    def __init__(self, server: Server) -> None:
        self.s = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a delayed stream is being written
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self._drain()

    def _drain(self) -> None:
        while not self.busy and not self.closed:
            req = self._parse()
            if req is None:
                return
            self._answer(req)

    def _parse(self) -> _Request | None:
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self._bad()
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        try:
            method, path, _version = lines[0].split(b" ", 2)
        except ValueError:
            self._bad()
            return None
        req = _Request()
        req.method, req.path = method, path
        length = 0
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                req.keep_alive = b"close" not in value.lower()
            elif name == b"x-bench-delay-ms":
                req.delay = float(value) / 1000
            elif name == b"x-bench-verify":
                req.verify = value.strip() == b"1"
        start = end + 4
        if chunked:
            body = bytearray()
            pos = start
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(bytes(buf[pos:eol]).split(b";")[0], 16)
                if len(buf) < eol + 2 + size + 2:
                    return None
                if size == 0:
                    trailer_end = buf.find(b"\r\n\r\n", eol)
                    if trailer_end < 0 and buf[eol + 2 : eol + 4] != b"\r\n":
                        return None
                    consumed = eol + 4 if buf[eol + 2 : eol + 4] == b"\r\n" else trailer_end + 4
                    break
                body += buf[eol + 2 : eol + 2 + size]
                pos = eol + 2 + size + 2
            req.body = bytes(body)
        else:
            if len(buf) < start + length:
                return None
            req.body = bytes(buf[start : start + length])
            consumed = start + length
        del buf[:consumed]
        return req

    def _bad(self) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        self.transport.close()
        self.closed = True

    def _simple(self, status: bytes, ctype: bytes, body: bytes, req: _Request) -> None:
        assert self.transport is not None
        extra = b"" if req.keep_alive else b"connection: close\r\n"
        self.transport.write(
            b"HTTP/1.1 %b\r\ncontent-type: %b\r\n%b%b%bcontent-length: %d\r\n%b\r\n%b"
            % (status, ctype, self.s.headers.request_id(), self.s.headers.common(), self._verify(req),
               len(body), extra, b"" if req.method == b"HEAD" else body)
        )  # fmt: skip
        if not req.keep_alive:
            self.transport.close()

    @staticmethod
    def _verify(req: _Request) -> bytes:
        if not req.verify:
            return b""
        return b"x-bench-body-len: %d\r\nx-bench-body-crc32: %08x\r\n" % (
            len(req.body), zlib.crc32(req.body)
        )

    def _answer(self, req: _Request) -> None:
        path = req.path.split(b"?", 1)[0]
        if req.method == b"POST" and path == b"/v1/messages":
            try:
                head = _decode_head(req.body)
            except (msgspec.DecodeError, msgspec.ValidationError):
                body = sse.encode_json(sse.error_body("invalid_request_error", "There was an error parsing the body of your request."))
                self._simple(b"400 Bad Request", b"application/json", body, req)
                return
            model = head.model or "claude-opus-4-8"
            reply = self.s.replies.get(model, max(1, len(req.body) // 4), bool(head.stream))
            if head.stream:
                self._stream(reply, req)
            else:
                self._simple(b"200 OK", b"application/json", reply, req)
        elif req.method == b"POST" and path == b"/v1/messages/count_tokens":
            body = b'{"input_tokens":%d}' % max(1, len(req.body) // 4)
            self._simple(b"200 OK", b"application/json", body, req)
        elif req.method == b"GET" and path == b"/v1/models":
            self._simple(b"200 OK", b"application/json", self.s.models_body, req)
        elif req.method in (b"GET", b"HEAD") and path == b"/":
            self._simple(b"200 OK", b"text/plain", b"fake upstream\n", req)
        elif req.method == b"POST" and path == b"/v1/traces":
            # An OTLP/HTTP sink for a traced sidecar (an empty ExportTraceServiceResponse).
            self._simple(b"200 OK", b"application/x-protobuf", b"", req)
        else:
            body = sse.encode_json(sse.error_body("not_found_error", "Not found"))
            self._simple(b"404 Not Found", b"application/json", body, req)

    def _stream(self, chunks: list[bytes], req: _Request) -> None:
        t = self.transport
        assert t is not None
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"cache-control: no-cache\r\n%b%b%btransfer-encoding: chunked\r\n%b\r\n"
            % (self.s.headers.request_id(), self.s.headers.common(), self._verify(req),
               b"" if req.keep_alive else b"connection: close\r\n")
        )  # fmt: skip
        if req.delay <= 0:
            # One write per event, as a real upstream's events arrive: the proxy sees each.
            t.write(head + chunks[0])
            for c in chunks[1:]:
                t.write(c)
            t.write(b"0\r\n\r\n")
            if not req.keep_alive:
                t.close()
            return
        self.busy = True
        task = asyncio.get_running_loop().create_task(self._slow_stream(head, chunks, req))
        self.s.tasks.add(task)
        task.add_done_callback(self.s.tasks.discard)

    async def _slow_stream(self, head: bytes, chunks: list[bytes], req: _Request) -> None:
        t = self.transport
        assert t is not None
        try:
            t.write(head + chunks[0])
            for c in chunks[1:]:
                await asyncio.sleep(req.delay)
                if self.closed:
                    return
                t.write(c)
            t.write(b"0\r\n\r\n")
            if not req.keep_alive:
                t.close()
        finally:
            self.busy = False
        self._drain()


async def serve(host: str, port: int, words: int) -> None:
    loop = asyncio.get_running_loop()
    state = Server(words)
    server = await loop.create_server(lambda: Conn(state), host, port, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    stop_on_signals(stop)
    try:
        await stop.wait()
    finally:
        server.close()
        for task in list(state.tasks):
            task.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--words", type=int, default=50, help="text deltas per reply")
    args = parser.parse_args(argv)
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(serve(args.host, args.port, args.words))


if __name__ == "__main__":
    sys.exit(main())
