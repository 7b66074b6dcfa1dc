"""The listener's fast path (sidecar.proxy.lane) answers exactly as aiohttp does.

A differential raw-socket test: two in-process sidecars, one with `[server] fast_path = true`
and one with `fast_path = false`, each against its own echo upstream (behind a TcpRecorder, so
what each forwarded is compared too), get the same bytes from a seeded generator
(SIDECAR_FAST_PATH_SEED, SIDECAR_FAST_PATH_SCENARIOS override): plain JSON, streaming and
count_tokens requests (`?beta=true` or not, small and 90 KB bodies), split across writes at
random offsets inside heads and bodies with small pauses, 1-3 pipelined per write, several
rounds on one keep-alive connection, and variants that must go to aiohttp (Connection: close,
Expect, chunked, gzip, HTTP/1.0, Origin, a foreign Host, the local token, dirty header bytes,
invalid JSON, a body over the cap, a bad session id, an encoded path, a trailing slash, ...).
Both must give the same answers (status line, headers, de-chunked bodies, ids and dates
normalised), leave the connection in the same state (a keep-alive probe tells), forward the
same requests upstream, and the fast one must have served the plain requests itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import gzip
import hashlib
import itertools
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sidecar.testing.fake_echo import ECHO_HEADER, MARKER_HEADER, EchoUpstream
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process
from sidecar.testing.recorder import Answer, TcpRecorder, is_envelope, parse_answers

SEED = int(os.environ.get("SIDECAR_FAST_PATH_SEED", "17"))
SCENARIOS = int(os.environ.get("SIDECAR_FAST_PATH_SCENARIOS", "160"))
BASELINE = os.environ.get("SIDECAR_FAST_PATH_BASELINE") == "1"  # both sidecars without the fast path: a difference is the test's noise
CASE_DEADLINE = 10.0  # far above every server deadline in play: reaching it means a hang
MAX_BODY_MB = 1  # large enough that pipelined bodies pass the lane's 1 MiB hold (it pauses reading)
MAX_BODY = int(MAX_BODY_MB * 1024 * 1024)
MARKER = MARKER_HEADER.encode()
PROBE = b"GET /healthz HTTP/1.1\r\nHost: %s\r\n\r\n"  # tells whether the connection is still open


# ------------------------------------------------------------------ two sidecars


@dataclass
class Side:
    """One sidecar of the pair, and the recorder between it and its echo upstream."""

    name: str
    sc: InProcessSidecar
    upstream: TcpRecorder

    @property
    def port(self) -> int:
        return int(self.sc.url.rsplit(":", 1)[1])

    @property
    def host(self) -> bytes:
        return f"127.0.0.1:{self.port}".encode()


def fast_served(side: Side) -> int:
    """Requests the fast path answered on `side`'s listener."""
    return side.sc.runner.listener.fast_served


def counts(fast: Side, slow: Side) -> tuple[int, int]:
    """Both sides' fast_served."""
    return fast_served(fast), fast_served(slow)


def server_toml(fast: bool, extra: str) -> str:
    fast = fast and not BASELINE
    return f"\n[server]\nfast_path = {'true' if fast else 'false'}\nmax_body_mb = {MAX_BODY_MB}\n{extra}\n"


@asynccontextmanager
async def pair(home: Path, extra: str = "") -> AsyncIterator[tuple[Side, Side]]:
    """A fast-path sidecar and an aiohttp-only one, each with its own echo upstream."""
    async with contextlib.AsyncExitStack() as stack:
        sides = []
        for name, fast in (("fast", True), ("slow", False)):
            echo = await stack.enter_async_context(EchoUpstream())
            rec = await stack.enter_async_context(TcpRecorder(echo.port))
            config = anthropic_config(f"http://127.0.0.1:{rec.port}", server_toml(fast, extra))
            sc = await stack.enter_async_context(sidecar_in_process(config, home / name))
            sides.append(Side(name, sc, rec))
        fast_side, slow_side = sides
        assert len(fast_side.host) == len(slow_side.host)  # the same offsets cut both byte streams
        assert len(fast_side.sc.token) == len(slow_side.sc.token)
        yield fast_side, slow_side


# ------------------------------------------------------------------ requests


@dataclass
class Req:
    """One request's bytes (for the fast side; `for_side` rewrites Host and token)."""

    kind: str
    data: bytes
    fast: bool | None  # True: the fast path must serve it; False: aiohttp must; None: either


@dataclass
class Round:
    """Requests written together (pipelined), cut into writes at `cuts`, `pause` s apart;
    their answers are read before the next round is sent."""

    reqs: list[Req]
    cuts: list[int]
    pause: float

    @property
    def data(self) -> bytes:
        return b"".join(r.data for r in self.reqs)


@dataclass
class Scenario:
    """One connection's rounds."""

    rounds: list[Round]

    @property
    def reqs(self) -> list[Req]:
        return [r for rnd in self.rounds for r in rnd.reqs]

    def fast_bounds(self) -> tuple[int, int]:
        """How many requests the fast path must serve at least (the plain ones before the first
        other one: after a hand-over the connection may stay with aiohttp) and at most."""
        low = 0
        for r in self.reqs:
            if r.fast is not True:
                break
            low += 1
        return low, sum(r.fast is not False for r in self.reqs)

    def describe(self) -> str:
        return " | ".join(", ".join(r.kind for r in rnd.reqs) + (f" (cut {len(rnd.cuts)}x)" if rnd.cuts else "") for rnd in self.rounds)


Headers = list[tuple[bytes, bytes]]
Edit = Callable[[bytes, Headers, bytes], tuple[bytes, Headers, bytes]]


class Gen:
    """Seeded generator of scenarios."""

    def __init__(self, seed: int, host: bytes, token: bytes) -> None:
        self.r = random.Random(seed)
        self.host = host
        self.token = token
        self.n = 0
        self.variants: list[tuple[Callable[[], Req], int]] = [
            (self.conn_close, 3), (self.expect, 3), (self.chunked, 3), (self.gzipped, 3), (self.http10, 3),
            (self.origin, 2), (self.foreign_host, 2), (self.token_header, 2), (self.token_bearer, 2),
            (self.control_byte, 2), (self.high_byte, 2), (self.bad_json, 3), (self.over_cap, 2),
            (self.bad_session, 2), (self.encoded_path, 2), (self.trailing_slash, 2), (self.upgrade, 1),
            (self.utf8_value, 2), (self.other_query, 2), (self.get_messages, 1), (self.other_path, 1),
            (self.dup_length, 1), (self.zero_length, 1), (self.empty_length, 1), (self.tab_value, 1),
            (self.absolute_target, 1), (self.bearer_other, 1), (self.obs_fold, 1), (self.lower_method, 1),
            (self.conn_other, 1),
        ]  # fmt: skip

    def marker(self) -> str:
        self.n += 1
        return f"fp{self.n:05d}-{self.r.getrandbits(32):08x}"

    def body(self, marker: str, *, stream: bool = False, count: bool = False, pad: int = 0) -> bytes:
        obj: dict[str, object] = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": marker}]}
        if not count:
            obj["max_tokens"] = 16
        if stream:
            obj["stream"] = True
        if pad:
            obj["system"] = [{"type": "text", "text": "You are Claude Code. " * (pad // 21 + 1)}]
        return json.dumps(obj).encode()

    def headers(self, marker: str) -> Headers:
        r = self.r
        hs: Headers = [
            (b"Host", self.host),
            (b"Accept", b"application/json"),
            (b"Content-Type", b"application/json"),
            (b"anthropic-version", b"2023-06-01"),
            (b"x-api-key", b"sk-ant-api03-fast-path-test"),
            (b"User-Agent", b"claude-cli/2.0.14 (external, cli)"),
            (b"X-Stainless-Lang", b"js"),
            (MARKER, marker.encode()),
            (b"x-claude-code-session-id", b"3f2a9c1e-5b7d-4e8f-a1b2-%012x" % r.getrandbits(48)),
        ]
        if r.random() < 0.5:
            hs.append((b"anthropic-beta", b"claude-code-20250219,interleaved-thinking-2025-05-14"))
        if r.random() < 0.3:
            hs.append((b"accept-encoding", b"gzip, deflate"))
        if r.random() < 0.3:
            hs.append((b"Connection", r.choice([b"keep-alive", b"Keep-Alive"])))
        if r.random() < 0.2:
            hs = [(k.lower() if r.random() < 0.5 else k.upper(), v) for k, v in hs]
        if r.random() < 0.2:
            r.shuffle(hs)
        return hs

    @staticmethod
    def build(
        target: bytes, hs: Headers, body: bytes, *, method: bytes = b"POST", version: bytes = b"HTTP/1.1", length: bool = True
    ) -> bytes:
        if length:
            hs = [*hs, (b"Content-Length", b"%d" % len(body))]
        head = b"%s %s %s\r\n" % (method, target, version) + b"".join(k + b": " + v + b"\r\n" for k, v in hs)
        return head + b"\r\n" + body

    def _plain(self, big: bool = False) -> tuple[str, bytes, Headers, bytes]:
        """A plain request's parts: kind, target, headers, body."""
        r = self.r
        m = self.marker()
        kind = r.choice(["json", "json", "stream", "stream", "count"])
        path = b"/v1/messages/count_tokens" if kind == "count" else b"/v1/messages"
        target = path + r.choice([b"", b"?beta=true"])
        pad = r.choice([0, 0, 0, 0, 0, 0, 0, 0, r.randint(500, 5000), r.randint(500, 5000), r.randint(20000, 90000)])
        pad = r.randint(400_000, 900_000) if big else pad
        return kind, target, self.headers(m), self.body(m, stream=kind == "stream", count=kind == "count", pad=pad)

    def plain(self, big: bool = False) -> Req:
        kind, target, hs, body = self._plain(big)
        return Req(f"plain-{kind}" + ("-big" if big else ""), self.build(target, hs, body), True)

    def _variant(
        self, kind: str, fast: bool | None, edit: Edit, *, method: bytes = b"POST", version: bytes = b"HTTP/1.1", length: bool = True
    ) -> Req:
        """A plain request changed by `edit` (target, headers, body)."""
        _, target, hs, body = self._plain()
        target, hs, body = edit(target, hs, body)
        return Req(kind, self.build(target, hs, body, method=method, version=version, length=length), fast)

    @staticmethod
    def _set(hs: Headers, name: bytes, value: bytes) -> Headers:
        return [(k, v) for k, v in hs if k.lower() != name.lower()] + [(name, value)]

    # ---- the variants that go to aiohttp (or may: fast=None)

    def conn_close(self) -> Req:
        return self._variant("conn-close", False, lambda t, h, b: (t, self._set(h, b"Connection", b"close"), b))

    def conn_other(self) -> Req:
        value = self.r.choice([b"keep-alive, TE", b"TE", b"upgrade"])
        return self._variant("conn-other", False, lambda t, h, b: (t, self._set(h, b"Connection", value), b))

    def expect(self) -> Req:
        return self._variant("expect", False, lambda t, h, b: (t, [*h, (b"Expect", b"100-continue")], b))

    def chunked(self) -> Req:
        _, target, hs, body = self._plain()
        cut = self.r.randint(1, len(body) - 1)
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:cut], body[cut:])) + b"0\r\n\r\n"
        return Req("chunked", self.build(target, [*hs, (b"Transfer-Encoding", b"chunked")], payload, length=False), False)

    def gzipped(self) -> Req:
        return self._variant("gzip", False, lambda t, h, b: (t, [*h, (b"Content-Encoding", b"gzip")], gzip.compress(b)))

    def http10(self) -> Req:
        # Without `Connection: keep-alive`: aiohttp streams an HTTP/1.0 answer without a length
        # and keeps such a connection open, so the client cannot see the end (on both paths).
        return self._variant("http10", False, lambda t, h, b: (t, [(k, v) for k, v in h if k.lower() != b"connection"], b), version=b"HTTP/1.0")

    def origin(self) -> Req:
        return self._variant("origin", False, lambda t, h, b: (t, [*h, (b"Origin", b"http://localhost:3000")], b))

    def foreign_host(self) -> Req:
        host = self.r.choice([b"evil.example", b"127.0.0.1.evil.example:8787"])
        return self._variant("foreign-host", False, lambda t, h, b: (t, self._set(h, b"Host", host), b))

    def token_header(self) -> Req:
        return self._variant("token-header", False, lambda t, h, b: (t, [*h, (b"x-sidecar-token", self.token)], b))

    def token_bearer(self) -> Req:
        return self._variant("token-bearer", False, lambda t, h, b: (t, [*h, (b"Authorization", b"Bearer " + self.token)], b))

    def bearer_other(self) -> Req:  # a subscription's own login: goes upstream untouched
        def hs_edit(h: Headers) -> Headers:
            return self._set([(k, v) for k, v in h if k.lower() != b"x-api-key"], b"Authorization", b"Bearer sk-ant-oat01-fast-path")

        return self._variant("bearer-other", None, lambda t, h, b: (t, hs_edit(h), b))

    def control_byte(self) -> Req:
        value = b"a" + self.r.choice([b"\x01", b"\x00", b"\x1b", b"\x7f", b"\r"]) + b"b"
        return self._variant("control-byte", False, lambda t, h, b: (t, [*h, (b"x-note", value)], b))

    def high_byte(self) -> Req:
        return self._variant("high-byte", False, lambda t, h, b: (t, [*h, (b"x-note", b"a\xffb")], b))

    def utf8_value(self) -> Req:
        return self._variant("utf8-value", None, lambda t, h, b: (t, [*h, (b"x-note", "café".encode())], b))

    def tab_value(self) -> Req:
        return self._variant("tab-value", None, lambda t, h, b: (t, [*h, (b"x-note", b"a\tb")], b))

    def bad_json(self) -> Req:
        return self._variant("bad-json", False, lambda t, h, b: (t, h, b[: self.r.randint(1, len(b) - 1)]))

    def over_cap(self) -> Req:  # the whole body is sent, so the 413's linger ends at once
        m = self.marker()
        body = self.body(m, pad=MAX_BODY + 1000)
        return Req("over-cap", self.build(b"/v1/messages", self.headers(m), body), False)

    def bad_session(self) -> Req:
        value = self.r.choice([b"s p a c e", b"", b"x" * 300])
        return self._variant("bad-session", False, lambda t, h, b: (t, self._set(h, b"x-claude-code-session-id", value), b))

    def encoded_path(self) -> Req:
        return self._variant("encoded-path", False, lambda t, h, b: (t.replace(b"/messages", b"/%6Dessages"), h, b))

    def trailing_slash(self) -> Req:
        return self._variant("trailing-slash", False, lambda t, h, b: (t.replace(b"?", b"/?") if b"?" in t else t + b"/", h, b))

    def upgrade(self) -> Req:
        return self._variant("upgrade", False, lambda t, h, b: (t, [*h, (b"Upgrade", b"websocket")], b))

    def other_query(self) -> Req:
        q = self.r.choice([b"?", b"?beta=true&x=%41", b"?beta=false", b"?a=1&beta=true"])
        return self._variant("other-query", None, lambda t, h, b: (t.split(b"?")[0] + q, h, b))

    def get_messages(self) -> Req:
        return self._variant("get-messages", False, lambda t, h, b: (t, h, b), method=b"GET")

    def lower_method(self) -> Req:
        return self._variant("lower-method", False, lambda t, h, b: (t, h, b), method=b"post")

    def other_path(self) -> Req:
        return self._variant("other-path", False, lambda t, h, b: (b"/v1/messages/batches", h, b))

    def dup_length(self) -> Req:
        return self._variant("dup-length", None, lambda t, h, b: (t, [*h, (b"Content-Length", b"%d" % len(b))], b))

    def zero_length(self) -> Req:
        return self._variant("zero-length", None, lambda t, h, b: (t, h, b""))

    def empty_length(self) -> Req:  # no Content-Length at all: an empty body
        return self._variant("no-length", None, lambda t, h, b: (t, h, b""), length=False)

    def absolute_target(self) -> Req:
        return self._variant("absolute-target", None, lambda t, h, b: (b"http://" + self.host + t, h, b))

    def obs_fold(self) -> Req:
        return self._variant("obs-fold", False, lambda t, h, b: (t, [*h, (b"x-note", b"a\r\n b")], b))

    # ---- scenarios

    def variant(self) -> Req:
        make = self.r.choices([v for v, _ in self.variants], [w for _, w in self.variants])[0]
        return make()

    def scenario(self) -> Scenario:
        r = self.r
        rounds = [[self.plain() for _ in range(r.choice([1, 1, 1, 2, 3]))] for _ in range(r.choice([1, 1, 2, 3, 4]))]
        for _ in range(r.choice([0, 1, 1, 2])):
            rnd = r.choice(rounds)
            rnd[r.randrange(len(rnd))] = self.variant()
        if r.random() < 0.05:  # pipelined bodies over the lane's 1 MiB hold, after a request that runs
            rounds.insert(r.randrange(len(rounds) + 1), [self.plain(), *(self.plain(big=True) for _ in range(r.randint(2, 3)))])
        return Scenario([self._round(reqs) for reqs in rounds])

    def _round(self, reqs: list[Req]) -> Round:
        """Cut points inside heads (the end of the head too) and inside bodies."""
        r = self.r
        cuts: set[int] = set()
        start = 0
        for req in reqs:
            head_end = req.data.find(b"\r\n\r\n") + 4
            for _ in range(r.choice([0, 0, 1, 1, 2, 3])):
                where = r.choice(["head", "head", "blank", "body"])
                if where == "head":
                    cuts.add(start + r.randint(1, head_end - 1))
                elif where == "blank":
                    cuts.add(start + head_end - r.randint(1, 3))
                elif len(req.data) > head_end + 1:
                    cuts.add(start + r.randint(head_end, len(req.data) - 1))
            start += len(req.data)
        cuts.discard(0)
        cuts.discard(start)
        return Round(reqs, sorted(cuts), r.choice([0.0, 0.001, 0.002, 0.005]) if cuts else 0.0)


def for_side(data: bytes, gen_side: Side, side: Side) -> bytes:
    """The fast side's bytes with `side`'s Host and token (the same lengths: the cuts stay put)."""
    if side is gen_side:
        return data
    return data.replace(gen_side.host, side.host).replace(gen_side.sc.token.encode(), side.sc.token.encode())


# ------------------------------------------------------------------ playing and reading


@dataclass
class Outcome:
    """What one connection got back."""

    data: bytes = b""
    closed: bool = False  # the server closed the connection before the scenario's last answer
    hung: bool = False
    probe: int | None = None  # the keep-alive probe's status; None: the connection was closed


def finals(answers: list[Answer]) -> list[Answer]:
    return [a for a in answers if a.status >= 200]


def complete(data: bytes, want: int) -> bool:
    """`data` holds `want` final answers, the last one whole."""
    answers, rest = parse_answers(data)
    if len(finals(answers)) < want or rest:
        return False
    last = answers[-1]
    if last.headers.get("transfer-encoding", "").lower() == "chunked":
        return data.endswith(b"0\r\n\r\n")
    if "content-length" in last.headers:
        return len(last.body) == int(last.headers["content-length"])
    return False  # runs to the close


class Inbox:
    """Reads a connection while the test writes to it (an answer the server gives before a
    close must not be lost to the reset our next write would draw)."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.data = b""
        self.eof = False  # the server closed (or reset) the connection
        self._changed = asyncio.Event()

    async def pump(self) -> None:
        try:
            while chunk := await self.reader.read(65536):
                self.data += chunk
                self._changed.set()
        except ConnectionError:
            pass
        self.eof = True
        self._changed.set()

    async def wait_for(self, want: int, start: int = 0) -> bool:
        """Wait until `want` final answers arrived after `start` (True) or the server closed (False)."""
        while True:
            if complete(self.data[start:], want):
                return True
            if self.eof:
                return False
            self._changed.clear()
            await self._changed.wait()


async def write_cut(writer: asyncio.StreamWriter, data: bytes, cuts: list[int], pause: float) -> None:
    bounds = [0, *cuts, len(data)]
    with contextlib.suppress(ConnectionError, OSError):
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            if i and pause:
                await asyncio.sleep(pause)
            writer.write(data[a:b])
            await writer.drain()


@asynccontextmanager
async def connection(side: Side) -> AsyncIterator[tuple[Inbox, asyncio.StreamWriter]]:
    """A raw connection to `side`, read all along."""
    reader, writer = await asyncio.open_connection("127.0.0.1", side.port)
    inbox = Inbox(reader)
    pump = asyncio.ensure_future(inbox.pump())
    try:
        yield inbox, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump


async def play(side: Side, rounds: list[tuple[bytes, int, list[int], float]]) -> Outcome:
    """Send each round (bytes, requests in it, cuts, pause), reading its answers before the
    next; then probe whether the connection is still open."""
    out = Outcome()
    want = 0
    end: int | None = None
    async with connection(side) as (inbox, writer):
        try:
            async with asyncio.timeout(CASE_DEADLINE):
                for data, n, cuts, pause in rounds:
                    want += n
                    await write_cut(writer, data, cuts, pause)
                    if not await inbox.wait_for(want):
                        out.closed = True
                        break
                end = len(inbox.data)
                if not out.closed:
                    await write_cut(writer, PROBE % side.host, [], 0.0)
                    if await inbox.wait_for(1, end):
                        answers, _ = parse_answers(inbox.data[end:])
                        out.probe = answers[-1].status
        except TimeoutError:
            out.hung = True
        out.data = inbox.data[:end]
    return out


# ------------------------------------------------------------------ comparing

_HEAD = re.compile(rb"HTTP/1\.[01] [0-9]{3}[^\r\n]*\r\n(?:[^\r\n]+\r\n)*\r\n")
_VOLATILE = [
    (re.compile(r"\b[0-7][0-9A-HJKMNP-TV-Z]{25}\b"), "<ulid>"),  # the sidecar's request ids
    (re.compile(r"\b(msg|req|toolu)_[0-9A-Za-z]{12,40}\b"), r"\1_<id>"),  # the fake's ids
    (re.compile(r"127\.0\.0\.1:[0-9]{4,5}"), "127.0.0.1:<port>"),  # the sidecars' and recorders' ports
]
_DROPPED = {"date"}


def normalise(text: str) -> str:
    for pattern, repl in _VOLATILE:
        text = pattern.sub(repl, text)
    return text


def view(out: Outcome) -> list[str]:
    """The outcome as comparable lines: status lines, sorted normalised headers, bodies, fate."""
    answers, rest = parse_answers(out.data)
    heads = _HEAD.findall(out.data)
    lines: list[str] = []
    if len(heads) != len(answers):
        lines.append(f"!! {len(heads)} heads for {len(answers)} answers")
    for head, a in zip(heads, answers, strict=False):
        status, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        pairs = [(k.strip().lower(), normalise(v.strip())) for k, _, v in (h.partition(":") for h in header_lines)]
        lines.append(status)
        lines += [f"  {k}: {v}" for k, v in sorted(pairs) if k not in _DROPPED]
        lines.append("  body: " + normalise(a.body.decode("latin-1")))
    lines.append("trailing: " + normalise(rest.decode("latin-1")))
    lines.append(f"hung={out.hung} closed-early={out.closed} probe={out.probe}")
    return lines


def differences(a: list[str], b: list[str]) -> str:
    return "\n".join(difflib.unified_diff(a, b, "fast", "slow", lineterm="", n=1))


def forwarded(side: Side) -> dict[str, list[str]]:
    """What `side` sent upstream, by marker: method, target, headers in order, body."""
    out: dict[str, list[str]] = {}
    for req in side.upstream.requests():
        marker = req.header(MARKER_HEADER) or "?"
        hs = [f"{k}: {normalise(v)}" for k, v in req.headers]
        body = req.body.decode("latin-1")
        shown = body if len(body) <= 300 else f"{body[:200]}...<{len(body)} bytes, sha1 {hashlib.sha1(req.body).hexdigest()[:12]}>"
        out.setdefault(marker, []).append(normalise(f"{req.method} {req.target} | {' | '.join(hs)} | {shown}"))
    return out


# ------------------------------------------------------------------ the tests


async def test_fast_path_answers_like_aiohttp(hermetic_env: Path) -> None:
    async with pair(hermetic_env) as (fast, slow):
        gen = Gen(SEED, fast.host, fast.sc.token.encode())
        scenarios = [gen.scenario() for _ in range(SCENARIOS)]
        problems: list[str] = []
        unserved: list[str] = []
        kinds: Counter[str] = Counter()
        fast_total = slow_total = 0
        t0 = time.monotonic()
        for i, sc in enumerate(scenarios):
            kinds.update(r.kind for r in sc.reqs)
            before = counts(fast, slow)
            outcomes = await asyncio.gather(*(
                play(side, [(for_side(rnd.data, fast, side), len(rnd.reqs), rnd.cuts, rnd.pause) for rnd in sc.rounds])
                for side in (fast, slow)
            ))  # fmt: skip
            views = [view(o) for o in outcomes]
            if views[0] != views[1] or outcomes[0].hung:
                sent = b" || ".join(r.data[:300] for r in sc.reqs)
                problems.append(
                    f"#{i} [{sc.describe()}]\n  sent: {sent!r}\n  fast raw: {outcomes[0].data[:600]!r}\n"
                    f"  slow raw: {outcomes[1].data[:600]!r}\n{differences(*views)}"
                )
            await asyncio.sleep(0.01)  # let the listeners count the answers just sent
            after = counts(fast, slow)
            if not BASELINE:
                low, high = sc.fast_bounds()
                got, slow_got = after[0] - before[0], after[1] - before[1]
                fast_total, slow_total = fast_total + got, slow_total + slow_got
                if not low <= got <= high or slow_got:
                    unserved.append(f"#{i} [{sc.describe()}]: fast path served {got} (expected {low}..{high}), aiohttp-only sidecar {slow_got}")
        elapsed = time.monotonic() - t0

        fwd_fast, fwd_slow = forwarded(fast), forwarded(slow)
        for marker in sorted(set(fwd_fast) | set(fwd_slow)):
            a, b = fwd_fast.get(marker, []), fwd_slow.get(marker, [])
            if a != b:
                problems.append(f"forwarded upstream for {marker}:\n{differences(a, b)}")

        n = sum(len(s.reqs) for s in scenarios)
        print(f"\n{len(scenarios)} scenarios, {n} requests (seed {SEED}) in {elapsed:.1f} s; {dict(sorted(kinds.items()))}")
        report = [f"{len(problems)} differences:\n" + "\n\n".join(problems[:40])] if problems else []
        if unserved and not BASELINE:
            report.append(f"{len(unserved)} scenarios the fast path did not serve as expected:\n" + "\n".join(unserved[:30]))
        assert not report, "\n\n".join(report)
        if not BASELINE:
            assert fast_total > 0 and slow_total == 0


def plain_request(gen: Gen, *, stream: bool) -> tuple[bytes, str]:
    m = gen.marker()
    return gen.build(b"/v1/messages?beta=true", gen.headers(m), gen.body(m, stream=stream)), m


async def keepalive_then_idle(side: Side, gen: Gen, fast: Side) -> tuple[list[str], list[str]]:
    """50 requests on one connection, a pause shorter than idle_timeout, one more; then another
    connection left idle after its answer. Returns (problems, comparable lines)."""
    problems: list[str] = []
    lines: list[str] = []
    async with connection(side) as (inbox, writer), asyncio.timeout(CASE_DEADLINE * 3):
        for i in range(51):
            if i == 50:
                await asyncio.sleep(0.5)  # idle_timeout is 1 s
            data, marker = plain_request(gen, stream=i % 3 == 0)
            start = len(inbox.data)
            await write_cut(writer, for_side(data, fast, side), [], 0.0)
            ok = await inbox.wait_for(1, start)
            got = inbox.data[start:]
            answers, _ = parse_answers(got)
            if not ok or len(answers) != 1 or answers[0].status != 200 or answers[0].headers.get(ECHO_HEADER) != marker:
                problems.append(f"{side.name}: request {i} on the kept connection got {got[:300]!r} (closed={not ok})")
                break
            lines += view(Outcome(got))

    async with connection(side) as (inbox, writer):
        data, marker = plain_request(gen, stream=False)
        await write_cut(writer, for_side(data, fast, side), [], 0.0)
        try:
            async with asyncio.timeout(CASE_DEADLINE):
                ok = await inbox.wait_for(1)
                answered = len(inbox.data)
                lines += view(Outcome(inbox.data, not ok))
                await inbox.wait_for(2)  # returns at the close: nothing more is asked
            lines.append(f"after the answer, before the idle close: {inbox.data[answered:]!r}")
        except TimeoutError:
            problems.append(f"{side.name}: an idle keep-alive connection was not closed after idle_timeout_seconds")
    return problems, lines


async def test_lane_connection_keeps_alive_and_idles_out(hermetic_env: Path) -> None:
    async with pair(hermetic_env, "idle_timeout_seconds = 1") as (fast, slow):
        before = counts(fast, slow)
        results = await asyncio.gather(
            keepalive_then_idle(fast, Gen(SEED, fast.host, b""), fast),
            keepalive_then_idle(slow, Gen(SEED, fast.host, b""), fast),
        )
        problems = [p for probs, _ in results for p in probs]
        assert not problems, "\n".join(problems)
        assert results[0][1] == results[1][1], differences(results[0][1], results[1][1])
        if not BASELINE:
            assert fast_served(fast) - before[0] == 52
            assert fast_served(slow) - before[1] == 0


async def stalled_body(side: Side, gen: Gen, fast: Side) -> tuple[Outcome, float]:
    """Head and half the body, then nothing: read until the server closes."""
    data, _ = plain_request(gen, stream=False)
    data = for_side(data, fast, side)
    head_end = data.index(b"\r\n\r\n") + 4
    half = head_end + (len(data) - head_end) // 2
    out = Outcome()
    t0 = time.monotonic()
    async with connection(side) as (inbox, writer):
        await write_cut(writer, data[:half], [], 0.0)
        try:
            async with asyncio.timeout(CASE_DEADLINE):
                await inbox.wait_for(2)  # returns at the close (one answer is expected)
        except TimeoutError:
            out.hung = True
        out.data, out.closed = inbox.data, inbox.eof
    return out, time.monotonic() - t0


async def test_stalled_body_gets_408_on_the_fast_path(hermetic_env: Path) -> None:
    async with pair(hermetic_env, "body_timeout_seconds = 0.5") as (fast, slow):
        before = counts(fast, slow)
        (out_fast, t_fast), (out_slow, t_slow) = await asyncio.gather(
            stalled_body(fast, Gen(SEED, fast.host, b""), fast), stalled_body(slow, Gen(SEED, fast.host, b""), fast)
        )
        print(f"\n408 after {t_fast:.2f} s (fast path) and {t_slow:.2f} s (aiohttp)")
        for side, out in ((fast, out_fast), (slow, out_slow)):
            answers, rest = parse_answers(out.data)
            assert not out.hung, f"{side.name}: no 408 within {CASE_DEADLINE} s: {out.data!r}"
            assert len(answers) == 1 and answers[0].status == 408 and is_envelope(answers[0]), f"{side.name}: {out.data!r}"
            assert out.closed and not rest
        assert view(out_fast) == view(out_slow), differences(view(out_fast), view(out_slow))
        after = counts(fast, slow)  # either may be fine: the lane hands a stalled body to aiohttp
        print(f"fast_served grew by {after[0] - before[0]} for the stalled request")


GARBAGE = [
    b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # a good head that stops: 408 at the header deadline on both
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\x00\x20",  # TLS to the plain port
    b"post /v1/messages HTTP/1.1\r\nHost: x\r\n",  # a bad method, the head not yet complete
    b"POST /v1/messages HTTP/1.1\r\nx-note: a\x01b\r\n",  # a control byte, the head not yet complete
    b"GARBAGE\r\n",
]


async def test_garbage_is_refused_as_soon_as_it_arrives(hermetic_env: Path) -> None:
    """aiohttp refuses bytes that cannot start a request when they arrive (400 and close);
    the fast path must not hold them until the header deadline (408)."""
    async with pair(hermetic_env, "header_timeout_seconds = 2") as (fast, slow):
        problems = []
        got = await asyncio.gather(*(play(side, [(data, 1, [], 0.0)]) for data in GARBAGE for side in (fast, slow)))
        for i, data in enumerate(GARBAGE):
            outs = got[2 * i : 2 * i + 2]
            views = [view(o) for o in outs]
            if views[0] != views[1]:
                problems.append(f"{data!r}:\n  fast: {outs[0].data!r}\n  slow: {outs[1].data!r}\n{differences(*views)}")
        assert not problems, "\n\n".join(problems)


async def paused_body(side: Side, gen: Gen, fast: Side, pause: float) -> Outcome:
    """Head and half the body, a pause, the rest: then probe the connection."""
    data, _ = plain_request(gen, stream=True)
    data = for_side(data, fast, side)
    head_end = data.index(b"\r\n\r\n") + 4
    return await play(side, [(data, 1, [head_end + (len(data) - head_end) // 2], pause)])


async def test_body_resumed_after_a_pause_is_answered(hermetic_env: Path) -> None:
    """A body that pauses longer than the lane waits (it hands the connection to aiohttp) but
    within body_timeout_seconds is answered as usual, and the connection stays usable."""
    async with pair(hermetic_env, "body_timeout_seconds = 3") as (fast, slow):
        outs = await asyncio.gather(*(paused_body(side, Gen(SEED, fast.host, b""), fast, 0.6) for side in (fast, slow)))
        for side, out in zip((fast, slow), outs, strict=True):
            answers, _ = parse_answers(out.data)
            assert [a.status for a in answers] == [200] and out.probe == 200, f"{side.name}: {out.data[:400]!r} probe={out.probe}"
        assert view(outs[0]) == view(outs[1]), differences(view(outs[0]), view(outs[1]))
