"""Requests for the fast-path differential test (tests/sidecar/proxy/test_fast_path.py).

A seeded generator of scenarios: plain JSON, streaming and count_tokens requests (`?beta=true`
or not, small to 900 KB bodies), cut into writes at random offsets inside heads and bodies,
1-3 pipelined per write, several rounds on one keep-alive connection, and variants: some the
lane must hand to aiohttp (framing it does not take: Connection: close, Expect, chunked, gzip,
HTTP/1.0, dirty header bytes, a body over the cap, ...), some it serves and the ingress
middleware refuses exactly as on aiohttp's path (Origin, a foreign Host, the local token,
invalid JSON, a bad session id).
"""

from __future__ import annotations

import gzip
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from sidecar.testing.fake_echo import MARKER_HEADER

MAX_BODY_MB = 1  # large enough that pipelined bodies pass the lane's 1 MiB hold (it pauses reading)
MAX_BODY = int(MAX_BODY_MB * 1024 * 1024)
MARKER = MARKER_HEADER.encode()
_MARKER_RE = re.compile(rb"\r\n" + re.escape(MARKER) + rb": (fp[0-9]{5}-[0-9a-f]{8})\r\n", re.IGNORECASE)



@dataclass
class Req:
    """One request's bytes (for the fast side; `for_side` rewrites Host and token)."""

    kind: str
    data: bytes
    fast: bool | None  # True: the fast path must serve it; False: aiohttp must; None: either

    @property
    def marker(self) -> str:
        """The request's x-fuzz-marker ("" if it has none)."""
        found = _MARKER_RE.search(self.data)
        return found.group(1).decode() if found else ""


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

    # ---- the variants: fast=False ones go to aiohttp (framing the lane does not take), fast=None
    # ones may; fast=True ones have plain framing, so the lane takes them and the ingress
    # middleware answers them exactly as on aiohttp's path (decision D3)

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
        return self._variant("origin", True, lambda t, h, b: (t, [*h, (b"Origin", b"http://localhost:3000")], b))

    def foreign_host(self) -> Req:
        host = self.r.choice([b"evil.example", b"127.0.0.1.evil.example:8787"])
        return self._variant("foreign-host", True, lambda t, h, b: (t, self._set(h, b"Host", host), b))

    def token_header(self) -> Req:
        return self._variant("token-header", True, lambda t, h, b: (t, [*h, (b"x-sidecar-token", self.token)], b))

    def token_bearer(self) -> Req:
        return self._variant("token-bearer", True, lambda t, h, b: (t, [*h, (b"Authorization", b"Bearer " + self.token)], b))

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
        return self._variant("bad-json", True, lambda t, h, b: (t, h, b[: self.r.randint(1, len(b) - 1)]))

    def over_cap(self) -> Req:  # the whole body is sent, so the 413's linger ends at once
        m = self.marker()
        body = self.body(m, pad=MAX_BODY + 1000)
        return Req("over-cap", self.build(b"/v1/messages", self.headers(m), body), False)

    def bad_session(self) -> Req:
        value = self.r.choice([b"s p a c e", b"", b"x" * 300])
        return self._variant("bad-session", True, lambda t, h, b: (t, self._set(h, b"x-claude-code-session-id", value), b))

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
