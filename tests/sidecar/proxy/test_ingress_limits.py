"""What ingress does with bad input and with clients that hold on: envelopes, 4xx for the
client's faults (never a 500), usage recording that a bad header cannot stop, deadlines,
a body cap and a connection cap that slow clients cannot use to lock out /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import pytest
from aiohttp import web
from aiohttp.http import HttpVersion10, HttpVersion11
from aiohttp.test_utils import make_mocked_request

from sidecar.appkeys import CONFIG, PROVIDERS, RUNTIME, Runtime
from sidecar.config import parse
from sidecar.proxy import handlers
from sidecar.proxy.ingress import ingress
from sidecar.proxy.listener import end_unframed_http10
from sidecar.testing.fake_anthropic import FakeAnthropic, StallBeforeHeaders
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)
from sidecar.testing.recorder import Answer, is_envelope, parse_answers

BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()
LIMITS = """
[server]
header_timeout_seconds = 0.3
body_timeout_seconds = 0.3
request_timeout_seconds = 1.5
idle_timeout_seconds = 0.5
max_body_mb = 1
max_connections = 20
"""


@pytest.fixture
async def limited(fake: FakeAnthropic, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(anthropic_config(fake.url, LIMITS), hermetic_env) as sc:
        yield sc


def port_of(sc: InProcessSidecar) -> int:
    return int(sc.url.rsplit(":", 1)[1])


def head(extra: bytes = b"", target: bytes = b"/v1/messages", length: int | None = None, close: bool = True) -> bytes:
    n = len(BODY) if length is None else length
    out = b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: k\r\n" + extra
    out += b"Content-Length: %d\r\n" % n
    return out + (b"Connection: close\r\n" if close else b"") + b"\r\n"


async def exchange(sc: InProcessSidecar, data: bytes) -> list[Answer]:
    """Send `data` on a fresh connection; every answer until the sidecar closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(sc))
    try:
        writer.write(data)
        async with asyncio.timeout(15):
            raw = await reader.read()
    finally:
        writer.close()
    answers, rest = parse_answers(raw)
    assert not rest, rest
    return answers


def error_type(a: Answer) -> str:
    assert is_envelope(a), a.body
    return str(json.loads(a.body)["error"]["type"])


# ------------------------------------------------------------------ bad bytes are 4xx, never 500


async def test_a_bad_session_id_is_refused_and_usage_keeps_being_recorded(
    fake: FakeAnthropic, sidecar: InProcessSidecar
) -> None:
    [bad] = await exchange(sidecar, head(b"x-claude-code-session-id: \xff\xfe\r\n") + BODY)
    assert bad.status == 400 and error_type(bad) == "invalid_request_error"
    assert b"x-claude-code-session-id" in bad.body
    [bad_agent] = await exchange(sidecar, head("x-claude-code-agent-id: agént\r\n".encode()) + BODY)
    assert bad_agent.status == 400
    [good] = await exchange(sidecar, head(b"x-claude-code-session-id: s-after\r\n") + BODY)
    assert good.status == 200
    rows = await ledger_rows(sidecar)  # the writer is not wedged: the good row is there
    assert [r["session_id"] for r in rows] == ["s-after"]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        pytest.param(head(b"x-note: a\xffb\r\n") + BODY, 400, id="ff-byte-in-a-header"),
        pytest.param(head("x-note: €\r\n".encode()) + BODY, 200, id="non-latin1-header-forwarded"),
        pytest.param(head(target=b"/v1/messages?beta=%E2%82%AC") + BODY, 200, id="pct-encoded-non-ascii-query"),
        pytest.param(head(b"Content-Encoding: gzip\r\n") + BODY, 400, id="gzip-label-on-a-plain-body"),
        pytest.param(head(b"Content-Encoding: zstd\r\n") + BODY, 400, id="unsupported-encoding"),
        pytest.param(head(b"Expect: 200-ok\r\n") + BODY, 417, id="unmeetable-expect"),
        pytest.param(head(b"Expect: v\xd8x\r\n") + BODY, 400, id="expect-not-utf8"),
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="malformed-head"),
        pytest.param(b"POST /v1/messages HTTP/0.9\r\nHost: 127.0.0.1\r\n\r\n", 400, id="http-0.9"),
        pytest.param(head(b"Transfer-Encoding: chunked\r\n") + BODY, 400, id="cl-and-te"),
    ],
)
async def test_bad_input_is_an_envelope_4xx_never_a_500(data: bytes, status: int, sidecar: InProcessSidecar) -> None:
    answers = await exchange(sidecar, data)
    assert [a.status for a in answers] == [status]
    if status >= 400:
        assert error_type(answers[0]).endswith("_error")


@pytest.mark.parametrize("depth", [990, 5000, 100_000])
async def test_deeply_nested_json_is_a_400(depth: int, sidecar: InProcessSidecar) -> None:
    body = BODY[:-1] + b', "metadata": ' + b"[" * depth + b"]" * depth + b"}"
    [a] = await exchange(sidecar, head(length=len(body)) + body)
    assert a.status in (200, 400), a.body
    if a.status == 400:
        assert b"nested too deeply" in a.body


async def test_a_real_gzip_body_is_decoded(fake: FakeAnthropic, sidecar: InProcessSidecar) -> None:
    body = gzip.compress(BODY)
    [a] = await exchange(sidecar, head(b"Content-Encoding: gzip\r\n", length=len(body)) + body)
    assert a.status == 200
    assert json.loads(fake.requests[0].body)["messages"][0]["content"] == "hi"


async def test_an_unexpected_exception_is_a_500_envelope_naming_the_request(
    sidecar: InProcessSidecar, caplog: pytest.LogCaptureFixture
) -> None:
    with mock.patch.object(handlers, "parse_head", side_effect=RuntimeError("boom")):
        [a] = await exchange(sidecar, head() + BODY)
    assert a.status == 500 and error_type(a) == "api_error"
    rid = a.headers["x-sidecar-request-id"]
    assert rid in json.loads(a.body)["error"]["message"]
    assert any(rid in r.getMessage() and r.exc_info for r in caplog.records)


# ------------------------------------------------------------------ size and time limits


async def test_a_content_length_over_the_cap_is_413_before_the_body_is_sent(limited: InProcessSidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(limited))
    try:
        writer.write(head(length=2 * 1024 * 1024 + 1, close=False))  # the body never follows
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    [a] = parse_answers(raw)[0]
    assert a.status == 413 and error_type(a) == "request_too_large"


async def test_expect_100_continue_with_a_body_over_the_cap_gets_413_not_the_go_ahead(limited: InProcessSidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(limited))
    try:
        writer.write(head(b"Expect: 100-continue\r\n", length=2 * 1024 * 1024, close=False))
        async with asyncio.timeout(10):
            raw = await reader.read()
    finally:
        writer.close()
    [a] = parse_answers(raw)[0]  # no interim 100 before it
    assert a.status == 413 and error_type(a) == "request_too_large"


async def test_a_chunked_body_over_the_cap_is_413(limited: InProcessSidecar) -> None:
    start = head(close=False).replace(b"Content-Length: %d" % len(BODY), b"Transfer-Encoding: chunked")
    chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(limited))
    try:
        writer.write(start + b"1\r\n{\r\n")

        async def flood() -> None:
            with contextlib.suppress(ConnectionError):
                for _ in range(64):  # 4 MiB, well over the 1 MiB cap
                    writer.write(chunk)
                    await writer.drain()

        sender = asyncio.ensure_future(flood())
        async with asyncio.timeout(10):
            raw = await reader.read()
        sender.cancel()
    finally:
        writer.close()
    [a] = parse_answers(raw)[0]
    assert a.status == 413 and error_type(a) == "request_too_large"


async def test_a_stalled_head_is_408_and_closed(limited: InProcessSidecar) -> None:
    [a] = await exchange(limited, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert a.status == 408 and error_type(a) == "timeout_error"


async def test_a_stalled_body_is_408(fake: FakeAnthropic, limited: InProcessSidecar) -> None:
    [a] = await exchange(limited, head() + BODY[:10])
    assert a.status == 408 and error_type(a) == "timeout_error"
    assert fake.requests == []


async def test_a_body_that_trickles_forever_is_408(limited: InProcessSidecar) -> None:
    start = head(close=False).replace(b"Content-Length: %d" % len(BODY), b"Transfer-Encoding: chunked")
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(limited))

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(start)
            while True:  # a byte every 0.1 s: never a pause long enough for body_timeout
                writer.write(b"1\r\n \r\n")
                await writer.drain()
                await asyncio.sleep(0.1)

    sender = asyncio.ensure_future(trickle())
    try:
        async with asyncio.timeout(15):
            raw = await reader.read()
    finally:
        sender.cancel()
        writer.close()
    [a] = parse_answers(raw)[0]
    assert a.status == 408 and error_type(a) == "timeout_error"


async def test_an_idle_keepalive_connection_is_closed(limited: InProcessSidecar) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(limited))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        async with asyncio.timeout(15):
            raw = await reader.read()  # returns only when the sidecar closes the idle connection
    finally:
        writer.close()
    [a] = parse_answers(raw)[0]
    assert a.status == 200


async def test_slow_clients_at_the_cap_cannot_lock_out_healthz(limited: InProcessSidecar) -> None:
    port = port_of(limited)
    slow = []
    for _ in range(60):  # three times max_connections, each holding a partial head
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        slow.append((r, w))
    try:
        async with aiohttp.ClientSession() as client, client.get(limited.url + "/healthz") as resp:
            assert resp.status == 200
        for r, _ in slow:  # every slow client is let go (evicted or timed out), none is held
            async with asyncio.timeout(15):
                await r.read()
    finally:
        for _, w in slow:
            w.close()


async def test_a_new_connection_is_refused_503_when_every_connection_is_busy(
    fake: FakeAnthropic, limited: InProcessSidecar
) -> None:
    fake.default = StallBeforeHeaders(seconds=3)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as client:
        busy = [
            asyncio.ensure_future(client.post(limited.url + "/v1/messages", data=BODY, headers={"x-api-key": "k"}))
            for _ in range(20)
        ]
        try:
            while len(fake.requests) < 20:  # noqa: ASYNC110 (the fake has no event to wait on)
                await asyncio.sleep(0.02)
            [a] = await exchange(limited, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert a.status == 503 and error_type(a) == "overloaded_error"
            assert a.headers["retry-after"] == "1"
        finally:
            for resp in await asyncio.gather(*busy, return_exceptions=True):
                if isinstance(resp, aiohttp.ClientResponse):
                    assert resp.status == 200
                    resp.release()


# ------------------------------------------------------------------ who may connect


async def _through_ingress(config: str, peer: str, headers: dict[str, str]) -> web.StreamResponse:
    app = web.Application()
    app[CONFIG] = parse(config, None, {})
    app[RUNTIME] = Runtime(token="tok", started_at=0.0)
    app[PROVIDERS] = {}
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 5555) if name == "peername" else default
    request = make_mocked_request("POST", "/v1/messages", headers=headers, app=app, transport=transport)

    async def ok(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    return await ingress(request, ok)


async def test_a_loopback_listener_refuses_a_foreign_peer_whatever_the_host_header() -> None:
    resp = await _through_ingress("", "10.1.2.3", {"Host": "127.0.0.1:8787"})
    assert resp.status == 403
    assert (await _through_ingress("", "127.0.0.1", {"Host": "127.0.0.1:8787"})).status == 200


async def test_a_listener_beyond_loopback_requires_the_token_everywhere() -> None:
    config = '[server]\nhost = "0.0.0.0"\n'
    assert (await _through_ingress(config, "10.1.2.3", {"Host": "10.0.0.9:8787"})).status == 401
    ok = await _through_ingress(config, "10.1.2.3", {"Host": "10.0.0.9:8787", "x-sidecar-token": "tok"})
    assert ok.status == 200


@pytest.mark.parametrize(
    "line",
    ["header_timeout_seconds = 0", "body_timeout_seconds = -1", "max_connections = 0", "max_body_mb = true",
     "idle_timeout_seconds = \"60\"", "request_timeout_seconds = -0.5"],
)
def test_limits_must_be_positive_numbers(line: str) -> None:
    from sidecar.errors import ConfigError

    key = line.split(" =")[0]
    with pytest.raises(ConfigError, match=f"server.{key}"):
        parse(f"[server]\n{line}\n", None, {})
    cfg = parse("[server]\nmax_body_mb = 0.5\nmax_connections = 7\n", None, {})
    assert cfg.server.max_body_bytes == 512 * 1024 and cfg.server.max_connections == 7


@pytest.mark.parametrize(
    ("version", "body", "kept"),
    [(HttpVersion10, None, False), (HttpVersion10, b"{}", None), (HttpVersion11, None, None)],
)
async def test_an_unframed_http10_answer_ends_its_connection(version: Any, body: bytes | None, kept: bool | None) -> None:
    """HTTP/1.0 cannot chunk: an answer without a length must end with the connection (any
    endpoint's; the Messages stream case is in test_fast_path). Framed answers keep theirs."""
    request = make_mocked_request("GET", "/", version=version, headers={"Connection": "keep-alive"})
    response = web.StreamResponse() if body is None else web.Response(body=body)
    await end_unframed_http10(request, response)
    assert response.keep_alive is kept
