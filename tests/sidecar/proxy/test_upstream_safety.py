"""No byte a client controls reaches another request's head, and no upstream answer reaches
the wrong client: smuggling through the query, hop-by-hop and Expect headers, interim (1xx)
answers, 101, close-delimited bodies cut short, upstreams that answer twice or lie in
Content-Length. Every answer carries the marker of the request it answers."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
import yarl

from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)
from sidecar.testing.recorder import RawRequest, RawResponse, parse_responses

BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()
SMUGGLE = (
    "/v1/messages?beta=true%20HTTP/1.1%0d%0aHost:%20x%0d%0aContent-Length:%200%0d%0a%0d%0a"
    "POST%20/v1/messages%20HTTP/1.1%0d%0aX-Pad:%20"
)


def message(marker: str) -> bytes:
    """An Anthropic message whose text is `marker`."""
    return json.dumps(
        {
            "id": f"msg_{marker}", "type": "message", "role": "assistant", "model": "claude-opus-4-8",
            "content": [{"type": "text", "text": marker}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 3, "output_tokens": 4},
        }
    ).encode()  # fmt: skip


def ok(marker: str, extra: str = "") -> bytes:
    """A complete 200 answer carrying `marker`."""
    body = message(marker)
    return f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body


def marker_of(body: bytes) -> str:
    """The marker an answer carries."""
    return str(json.loads(body)["content"][0]["text"])


# Writes the answer to one request; returns False to close the connection afterwards.
Answer = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[bool]]


async def echo(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
    """The default answer: a message carrying the request's x-marker."""
    writer.write(ok(req.header("x-marker") or "none"))
    return True


@dataclass
class RawUpstream:
    """An HTTP/1.1 upstream scripted byte by byte. It reads requests as leniently as a
    real server does (head up to the blank line, then Content-Length bytes), so a
    smuggled request shows up as a request of its own."""

    answer: Answer = echo
    requests: list[RawRequest] = field(default_factory=list)
    connections: int = 0
    closed_by_peer: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed_by_peer.set()
                    break
                lines = head[:-4].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [(k, v.strip()) for k, _, v in (ln.partition(":") for ln in lines[1:])]
                length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
                req = RawRequest(method, target, headers, await reader.readexactly(length))
                self.requests.append(req)
                keep = await self.answer(req, writer)
                await writer.drain()
                if not keep:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[RawUpstream]:
    async with RawUpstream() as up:
        yield up


@pytest.fixture
async def sidecar(upstream: RawUpstream, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(anthropic_config(upstream.url), hermetic_env) as sc:
        yield sc


async def post(
    client: aiohttp.ClientSession, sc: InProcessSidecar, marker: str, path: str = "/v1/messages", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    url = yarl.URL(sc.url + path, encoded=True)
    hdrs = {"x-api-key": "k", "content-type": "application/json", "x-marker": marker, **(headers or {})}
    async with client.post(url, data=BODY, headers=hdrs) as resp:
        return resp.status, await resp.read()


def raw_request(marker: str, target: str = "/v1/messages", extra: bytes = b"", close: bool = False) -> bytes:
    """One request as raw bytes (the client side of a raw socket)."""
    head = (
        f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: k\r\ncontent-type: application/json\r\n"
        f"x-marker: {marker}\r\ncontent-length: {len(BODY)}\r\n"
    ).encode("utf-8", "surrogateescape")
    return head + extra + (b"connection: close\r\n" if close else b"") + b"\r\n" + BODY


async def raw_exchange(sc: InProcessSidecar, data: bytes, count: int) -> list[RawResponse]:
    """Send `data` on one connection and read `count` final responses (1xx skipped)."""
    host, port = sc.url.rsplit("/", 1)[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        out: list[RawResponse] = []
        async with asyncio.timeout(20):
            while len(out) < count:
                head = await reader.readuntil(b"\r\n\r\n")
                [resp] = parse_responses(head, ["HEAD"])
                if 100 <= resp.status < 200:
                    continue
                length = int(resp.header("content-length") or 0)
                out.append(RawResponse(resp.status, resp.headers, await reader.readexactly(length)))
        return out
    finally:
        writer.close()


def is_envelope(body: bytes, etype: str) -> bool:
    err = json.loads(body)
    return bool(err["type"] == "error" and err["error"]["type"] == etype and err["error"]["message"].startswith("claude-sidecar:"))


# --------------------------------------------------------------------------- client bytes


async def test_crlf_in_the_query_cannot_smuggle_a_second_request(
    upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    status_a, body_a = await post(client, sidecar, "A", SMUGGLE)
    status_b, body_b = await post(client, sidecar, "B")  # on the same pooled connection
    assert len(upstream.requests) == 2, [r.target for r in upstream.requests]
    assert upstream.connections == 1
    first = upstream.requests[0]
    assert "\r" not in first.target and "\n" not in first.target and " " not in first.target
    assert first.target.lower() == SMUGGLE.lower()  # forwarded as the client encoded it
    assert first.header("host") == upstream.url.removeprefix("http://")
    assert (status_a, marker_of(body_a)) == (200, "A")
    assert (status_b, marker_of(body_b)) == (200, "B")


async def test_non_ascii_query_and_header_values_are_forwarded_exactly(
    upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    status, body = await post(client, sidecar, "A", "/v1/messages?beta=true&q=%E2%82%AC&r=%FF", {"x-note": "€ café"})
    assert (status, marker_of(body)) == (200, "A")
    [req] = upstream.requests
    assert req.target == "/v1/messages?beta=true&q=%E2%82%AC&r=%FF"
    assert req.header("x-note") == "€ café".encode().decode("latin-1")  # the client's UTF-8 bytes


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b"x-note: \xff\xfe\r\n", id="not-utf8-value"),
        pytest.param(b"x-claude-code-session-id: \xc3\x28\r\n", id="bad-utf8-session"),
    ],
)
async def test_header_bytes_that_cannot_be_sent_upstream_are_a_400(
    extra: bytes, upstream: RawUpstream, sidecar: InProcessSidecar
) -> None:
    [resp, after] = await raw_exchange(sidecar, raw_request("A", extra=extra) + raw_request("B", close=True), 2)
    assert resp.status == 400 and is_envelope(resp.body, "invalid_request_error"), resp.body
    assert (after.status, marker_of(after.body)) == (200, "B")
    assert [r.header("x-marker") for r in upstream.requests] == ["B"]


async def test_raw_non_ascii_bytes_in_the_target_never_reach_the_upstream_raw(
    upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    for target in ("/v1/messages?q=\u20ac", "/v1/messages?q=\udcff"):
        # Raw bytes (the second one is \xff): aiohttp's parser refuses them (a 400 of its own,
        # outside the handlers); if it ever lets them in, they must go out percent-encoded.
        [resp] = await raw_exchange(sidecar, raw_request("A", target=target, close=True), 1)
        assert resp.status in (200, 400), resp
        if resp.status == 200:
            assert upstream.requests[-1].target in ("/v1/messages?q=%E2%82%AC", "/v1/messages?q=%FF")
    assert all(r.target.isascii() for r in upstream.requests)
    assert (await post(client, sidecar, "B")) == (200, message("B"))


async def test_hop_by_hop_and_expect_headers_are_not_forwarded(upstream: RawUpstream, sidecar: InProcessSidecar) -> None:
    extra = (
        b"Connection: keep-alive, x-secret\r\nx-secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        b"Trailer: x-t\r\nUpgrade: h2c\r\nProxy-Authorization: Basic eA==\r\nProxy-Foo: f\r\n"
        b"Expect: 100-continue\r\nanthropic-version: 2023-06-01\r\n"
    )
    [resp] = await raw_exchange(sidecar, raw_request("A", extra=extra, close=True), 1)
    assert (resp.status, marker_of(resp.body)) == (200, "A")
    [req] = upstream.requests
    sent = {k.lower() for k, _ in req.headers}
    assert not sent & {"connection", "x-secret", "keep-alive", "te", "trailer", "upgrade", "proxy-authorization", "proxy-foo", "expect"}
    assert req.header("anthropic-version") == "2023-06-01" and req.header("x-marker") == "A"


async def test_pipelined_requests_with_a_smuggling_attempt_each_get_their_own_answer(
    upstream: RawUpstream, sidecar: InProcessSidecar
) -> None:
    data = raw_request("A") + raw_request("B", target=SMUGGLE) + raw_request("C") + raw_request("D", close=True)
    answers = await raw_exchange(sidecar, data, 4)
    assert [(r.status, marker_of(r.body)) for r in answers] == [(200, m) for m in "ABCD"]
    assert [r.header("x-marker") for r in upstream.requests] == list("ABCD")


# --------------------------------------------------------------------------- upstream bytes


async def test_interim_answers_are_skipped_and_never_cross_clients(upstream: RawUpstream, sidecar: InProcessSidecar) -> None:
    seen_expect: list[str] = []

    async def interim_first(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if req.header("expect"):
            seen_expect.append(req.header("expect") or "")
        # Interim answers a server may send whether asked or not; then the final one, in pieces.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nlink: </x>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.001)
        writer.write(ok(req.header("x-marker") or "none"))
        return True

    upstream.answer = interim_first

    async def one_client(n: int) -> list[tuple[int, str]]:
        data = b"".join(
            raw_request(f"c{n}r{i}", extra=b"Expect: 100-continue\r\n", close=i == 5) for i in range(6)
        )
        return [(r.status, marker_of(r.body)) for r in await raw_exchange(sidecar, data, 6)]

    results = await asyncio.gather(*(one_client(n) for n in range(8)))
    for n, got in enumerate(results):
        assert got == [(200, f"c{n}r{i}") for i in range(6)]
    assert not seen_expect


async def test_endless_interim_answers_are_a_502(upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async def stalling(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if req.header("x-marker") == "A":
            writer.write(b"HTTP/1.1 102 Processing\r\n\r\n" * 50 + ok("A"))
            return True
        return await echo(req, writer)

    upstream.answer = stalling
    status, body = await post(client, sidecar, "A")
    assert status == 502 and is_envelope(body, "api_error"), body
    assert (await post(client, sidecar, "B")) == (200, message("B"))


async def test_switching_protocols_from_the_upstream_is_a_502(upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async def switch(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if req.header("x-marker") == "A":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nwhatever")
            return False
        return await echo(req, writer)

    upstream.answer = switch
    status, body = await post(client, sidecar, "A")
    assert status == 502 and is_envelope(body, "api_error"), body
    assert (await post(client, sidecar, "B"))[1] == message("B")
    rows = await ledger_rows(sidecar)
    assert [r["outcome"] for r in rows] == ["upstream_error", "ok"]


@pytest.mark.parametrize("complete", [True, False])
async def test_close_delimited_json_must_be_complete(
    complete: bool, upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    async def close_delimited(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        body = message("A")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + (body if complete else body[:-9]))
        return False

    upstream.answer = close_delimited
    status, body = await post(client, sidecar, "A")
    [row] = await ledger_rows(sidecar)
    if complete:
        assert (status, body, row["outcome"]) == (200, message("A"), "ok")
    else:
        assert status == 502 and is_envelope(body, "api_error"), body
        assert row["outcome"] == "upstream_error"


@pytest.mark.parametrize("when", ["same-write", "later"])
async def test_bytes_after_a_complete_answer_are_never_served_to_the_next_request(
    when: str, upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    ghost_sent = asyncio.Event()

    async def twice(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        marker = req.header("x-marker") or "none"
        if marker != "A":
            return await echo(req, writer)
        if when == "same-write":
            writer.write(ok("A") + ok("ghost"))
        else:
            writer.write(ok("A"))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(ok("ghost"))
        ghost_sent.set()
        return True

    upstream.answer = twice
    status, body = await post(client, sidecar, "A")
    assert (status, body) == (200, message("A"))
    await ghost_sent.wait()
    # The sidecar must hang up on a connection that sent bytes nobody asked for.
    async with asyncio.timeout(10):
        await upstream.closed_by_peer.wait()
    for m in "BCD":
        assert (await post(client, sidecar, m)) == (200, message(m))


@pytest.mark.parametrize("lie", ["longer", "shorter"])
async def test_an_upstream_that_lies_in_content_length(
    lie: str, upstream: RawUpstream, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    async def liar(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        marker = req.header("x-marker") or "none"
        if marker != "A":
            return await echo(req, writer)
        body = message("A")
        if lie == "longer":  # declares less than it sends: the rest is an answer nobody asked for
            extra = ok("ghost")
            writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body + extra)
            return True
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body) + 50}\r\n\r\n".encode() + body)
        return False

    upstream.answer = liar
    status, body = await post(client, sidecar, "A")
    if lie == "longer":
        assert (status, body) == (200, message("A"))
    else:
        assert status == 502 and is_envelope(body, "api_error"), body
    for m in "BC":
        assert (await post(client, sidecar, m)) == (200, message(m))
    rows = await ledger_rows(sidecar)
    assert [r["outcome"] for r in rows] == ["ok" if lie == "longer" else "upstream_error", "ok", "ok"]


# --------------------------------------------------------------------------- through a proxy (aiohttp)


@pytest.fixture
async def proxied(upstream: RawUpstream, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InProcessSidecar]:
    """A sidecar whose upstream is reached through an HTTP proxy (the aiohttp client path);
    the raw upstream plays the proxy and answers itself."""
    monkeypatch.setenv("HTTP_PROXY", upstream.url)
    async with sidecar_in_process(anthropic_config("http://upstream.example"), hermetic_env) as sc:
        yield sc


async def test_through_a_proxy_client_bytes_are_forwarded_safely_or_refused(
    upstream: RawUpstream, proxied: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    assert (await post(client, proxied, "A", SMUGGLE))[0] == 200
    assert (await post(client, proxied, "B", "/v1/messages?q=%E2%82%AC", {"x-note": "€"})) == (200, message("B"))
    [bad, after] = await raw_exchange(proxied, raw_request("C", extra=b"x-note: \xff\r\n") + raw_request("D", close=True), 2)
    assert bad.status == 400 and is_envelope(bad.body, "invalid_request_error"), bad.body
    assert (after.status, marker_of(after.body)) == (200, "D")
    assert [r.header("x-marker") for r in upstream.requests] == ["A", "B", "D"]
    a, b = upstream.requests[0], upstream.requests[1]
    assert a.target.lower() == ("http://upstream.example" + SMUGGLE).lower()
    assert b.target == "http://upstream.example/v1/messages?q=%E2%82%AC"
    assert b.header("x-note") == "€".encode().decode("latin-1")



async def test_through_a_proxy_a_101_or_a_cut_close_delimited_answer_is_a_502(
    upstream: RawUpstream, proxied: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    async def broken(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        marker = req.header("x-marker")
        if marker == "switch":
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\nwhatever")
            return False
        if marker == "cut":
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + message("cut")[:-9])
            return False
        return await echo(req, writer)

    upstream.answer = broken
    for marker in ("switch", "cut"):
        status, body = await post(client, proxied, marker)
        assert status == 502 and is_envelope(body, "api_error"), (marker, body)
    assert (await post(client, proxied, "B")) == (200, message("B"))
    rows = await ledger_rows(proxied)
    assert [r["outcome"] for r in rows] == ["upstream_error", "upstream_error", "ok"]


@pytest.fixture(params=["direct", "via-proxy"])
async def either_client(request: pytest.FixtureRequest, upstream: RawUpstream, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[InProcessSidecar]:
    """A sidecar on the lean client (direct), or on aiohttp's (through an HTTP proxy)."""
    base = upstream.url
    if request.param == "via-proxy":
        monkeypatch.setenv("HTTP_PROXY", upstream.url)
        base = "http://upstream.example"
    async with sidecar_in_process(anthropic_config(base), hermetic_env) as sc:
        yield sc


async def test_a_hostile_upstream_under_concurrency_never_crosses_answers(upstream: RawUpstream, either_client: InProcessSidecar) -> None:
    """8 clients at once; each request's marker picks how the upstream misbehaves (seeded)."""
    sidecar = either_client
    cut = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n"
    behaviours: dict[str, tuple[int, Callable[[str], bytes], bool]] = {
        # name: (status the client must see, the upstream's bytes, keep the connection open)
        "plain": (200, lambda m: ok(m), True),
        "interim": (200, lambda m: b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: <x>\r\n\r\n" + ok(m), True),
        "ghost": (200, lambda m: ok(m) + ok("ghost"), True),
        "ghost-partial": (200, lambda m: ok(m) + b"HTTP/1.1 200 OK\r\ncontent-le", True),
        "close-whole": (200, lambda m: cut + message(m), False),
        "close-cut": (502, lambda m: cut + message(m)[:-5], False),
        "switch": (502, lambda m: b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\nconnection: upgrade\r\n\r\n", False),
        "short": (502, lambda m: ok(m)[:-5], False),
    }
    rng = random.Random(20261206)
    plan = {f"c{c}r{r}": rng.choice(list(behaviours)) for c in range(8) for r in range(20)}

    async def hostile(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        marker = req.header("x-marker") or "none"
        _, answer, keep = behaviours[plan[marker]]
        writer.write(answer(marker))
        return keep

    upstream.answer = hostile

    async def one_client(c: int) -> None:
        async with aiohttp.ClientSession() as session:
            for r in range(20):
                marker = f"c{c}r{r}"
                status, body = await post(session, sidecar, marker)
                want = behaviours[plan[marker]][0]
                assert status == want, (marker, plan[marker], status, body)
                if status == 200:
                    assert marker_of(body) == marker, (marker, plan[marker], body)
                else:
                    assert is_envelope(body, "api_error"), (marker, plan[marker], body)

    await asyncio.gather(*(one_client(c) for c in range(8)))
    assert sorted(r.header("x-marker") or "" for r in upstream.requests) == sorted(plan)


async def test_an_answer_given_up_on_closes_its_connection(upstream: RawUpstream, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async def slow_for_a(req: RawRequest, writer: asyncio.StreamWriter) -> bool:
        if req.header("x-marker") == "A":
            await asyncio.sleep(0.5)  # past the route's first-byte timeout
            writer.write(ok("A"))
            return True
        return await echo(req, writer)

    upstream.answer = slow_for_a
    routes = '[[routes]]\nname = "main"\nmatch = { model = "*" }\ntargets = [{ provider = "anthropic" }]\ntimeouts = { first_byte = 0.2 }\n'
    routes += "[routing.retry]\nrounds = 0\n"
    async with sidecar_in_process(anthropic_config(upstream.url, "read_timeout = 600\n") + routes, hermetic_env) as sc:
        status, body = await post(client, sc, "A")
        assert status == 504 and is_envelope(body, "timeout_error"), body
        async with asyncio.timeout(10):
            await upstream.closed_by_peer.wait()  # the sidecar hung up instead of keeping it
        for m in "BC":
            assert (await post(client, sc, m)) == (200, message(m))
