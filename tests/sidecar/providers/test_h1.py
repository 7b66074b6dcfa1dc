"""The lean upstream client: keep-alive reuse, stale connections, body framings, errors."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, ledger_rows, sidecar_in_process
from sidecar.testing.recorder import TcpRecorder, parse_requests

BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"x-api-key": "k", "content-type": "application/json"}
MESSAGE = json.dumps({"type": "message", "model": "claude-opus-4-8", "content": [], "usage": {"input_tokens": 3, "output_tokens": 4}}).encode()

# (request number on this connection, raw request bytes) -> raw answer, or None to hang up.
Answer = Callable[[int, bytes], Awaitable[bytes | None]]


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Answer], Awaitable[tuple[int, list[bytes]]]]]:
    """A raw HTTP/1.1 server scripted byte by byte; returns (port, bytes received per connection)."""
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> tuple[int, list[bytes]]:
        seen: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            log = bytearray()
            seen.append(b"")
            index = len(seen) - 1
            n = 0
            while True:
                head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
                if not head:
                    break
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                log += head + body
                seen[index] = bytes(log)
                n += 1
                out = await answer(n, head + body)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"\r\nconnection: close\r\n" in out.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    break
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1], seen

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


def ok(body: bytes = MESSAGE, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body


async def post(client: aiohttp.ClientSession, url: str) -> tuple[int, bytes, dict[str, str]]:
    async with client.post(url + "/v1/messages", data=BODY, headers=HEADERS) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def test_keep_alive_connection_is_reused(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with TcpRecorder(int(fake.url.rsplit(":", 1)[1])) as rec:
        async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{rec.port}"), hermetic_env) as sc:
            for stream in (False, True, False):
                async with client.post(sc.url + "/v1/messages", json={**json.loads(BODY), "stream": stream}, headers=HEADERS) as resp:
                    assert resp.status == 200
                    await resp.read()
        assert len(rec.connections) == 1
        assert len(parse_requests(bytes(rec.connections[0].upstream))) == 3


async def test_a_stale_pooled_connection_is_retried_on_a_fresh_one(
    raw_upstream: Callable[[Answer], Awaitable[tuple[int, list[bytes]]]], hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async def answer(n: int, raw: bytes) -> bytes | None:
        return ok() if n == 1 else None  # the server hangs up on a reused connection

    port, seen = await raw_upstream(answer)
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{port}"), hermetic_env) as sc:
        for _ in range(3):
            status, body, _ = await post(client, sc.url)
            assert (status, body) == (200, MESSAGE)
    assert len(seen) == 3  # one fresh connection per request, each request sent once on it


async def test_gzip_answer_is_decoded(raw_upstream: Callable[[Answer], Awaitable[tuple[int, list[bytes]]]], hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async def answer(n: int, raw: bytes) -> bytes | None:
        assert b"Accept-Encoding: identity" in raw
        return ok(gzip.compress(MESSAGE), "content-encoding: gzip\r\n")

    port, _ = await raw_upstream(answer)
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{port}"), hermetic_env) as sc:
        status, body, headers = await post(client, sc.url)
        rows = await ledger_rows(sc)
    assert (status, body) == (200, MESSAGE)
    assert "Content-Encoding" not in headers
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"]) == (3, 4)


async def test_close_delimited_and_chunked_bodies(raw_upstream: Callable[[Answer], Awaitable[tuple[int, list[bytes]]]], hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async def answer(n: int, raw: bytes) -> bytes | None:
        if b"beta=chunked" in raw:
            half = len(MESSAGE) // 2
            parts = [MESSAGE[:half], MESSAGE[half:]]
            chunks = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts)
            return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n" + MESSAGE

    port, _ = await raw_upstream(answer)
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{port}"), hermetic_env) as sc:
        for query in ("?beta=chunked", "?beta=close"):
            async with client.post(sc.url + "/v1/messages" + query, data=BODY, headers=HEADERS) as resp:
                assert resp.status == 200
                assert await resp.read() == MESSAGE


async def test_base_url_path_prefix_is_kept(raw_upstream: Callable[[Answer], Awaitable[tuple[int, list[bytes]]]], hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async def answer(n: int, raw: bytes) -> bytes | None:
        return ok()

    port, seen = await raw_upstream(answer)
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{port}/gateway/anthropic"), hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages?beta=true", data=BODY, headers=HEADERS) as resp:
            assert resp.status == 200
    [req] = parse_requests(seen[0])
    assert req.target == "/gateway/anthropic/v1/messages?beta=true"
    assert req.header("host") == f"127.0.0.1:{port}"
    assert req.body == BODY


async def test_malformed_upstream_answer_is_a_clean_error(raw_upstream: Callable[[Answer], Awaitable[tuple[int, list[bytes]]]], hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async def answer(n: int, raw: bytes) -> bytes | None:
        return b"NOT HTTP AT ALL\r\n\r\n"

    port, _ = await raw_upstream(answer)
    async with sidecar_in_process(anthropic_config(f"http://127.0.0.1:{port}"), hermetic_env) as sc:
        status, body, _ = await post(client, sc.url)
    assert status == 529
    assert json.loads(body)["error"]["type"] == "overloaded_error"


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, and its key."""
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_upstream_with_verification(
    tls_cert: tuple[Path, Path], hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from aiohttp import web

    cert, key = tls_cert
    async with FakeAnthropic() as fake:
        # Serve the fake's app over TLS too.
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        runner = web.AppRunner(fake.app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = runner.addresses[0][1]
        try:
            # Unknown CA: refused before anything is sent.
            async with sidecar_in_process(anthropic_config(f"https://localhost:{port}"), hermetic_env) as sc:
                status, body, _ = await post(client, sc.url)
                assert status == 529 and b"CERTIFICATE_VERIFY_FAILED" in body
            # Trusted through SSL_CERT_FILE, as a corporate CA bundle would be.
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))
            async with sidecar_in_process(anthropic_config(f"https://localhost:{port}"), hermetic_env) as sc:
                for _ in range(2):
                    status, body, _ = await post(client, sc.url)
                    assert status == 200, body
        finally:
            await runner.cleanup()
    assert len(fake.requests) == 2
    assert fake.requests[0].header("host") == f"localhost:{port}"


async def test_reading_from_the_upstream_pauses_and_resumes_without_loss(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sidecar.providers import h1
    from sidecar.testing.anthropic_sse import sse_events
    from sidecar.testing.fake_anthropic import Text

    pauses: list[int] = []
    real_pause = h1._Conn.pause

    def counting_pause(conn: h1._Conn) -> None:
        pauses.append(1)
        real_pause(conn)

    monkeypatch.setattr(h1._Conn, "pause", counting_pause)
    # Loopback socket buffers hold megabytes, so make the sidecar's own buffer small enough
    # that reading from the upstream is paused and resumed many times on the way.
    monkeypatch.setattr(h1, "HIGH_WATER", 4096)

    text = " ".join(f"w{i:06d}" for i in range(400_000))  # about 3 MB of text deltas
    fake.script(Text(text, chunks=3000))
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", json={**json.loads(BODY), "stream": True}, headers=HEADERS) as resp:
            await asyncio.sleep(1.0)  # the sidecar's writes to us stall; it must stop reading upstream
            raw = await resp.read()
        rows = await ledger_rows(sc)
    events = sse_events(raw)
    assert events[-1][0] == "message_stop"
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == text
    assert rows[0]["outcome"] == "ok"
    assert pauses, "the upstream was never paused"
