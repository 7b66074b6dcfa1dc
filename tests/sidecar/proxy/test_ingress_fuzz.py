"""A raw-socket fuzzer against the sidecar's listener (a real socket, a fake upstream that
echoes a per-request marker).

Seeded generator (SIDECAR_FUZZ_SEED, SIDECAR_FUZZ_INPUTS override): malformed request
lines and heads, control and non-Latin-1 bytes in every header and in the query, CL/TE
conflicts, Expect, truncated, stalled and endless bodies, deep and broken JSON, bodies over
the cap, keep-alive reuse and pipelining. For every input it asserts: no 5xx the sidecar made
itself (a 5xx is fine only when the fake upstream produced it), an Anthropic-envelope 4xx
for each bad input, every answer carries its own request's marker (no cross-talk), and no
input hangs the connection. Afterwards the daemon is healthy and still records usage.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_echo import (
    ECHO_HEADER,
    FAIL_PREFIX,
    MARKER_HEADER,
    UPSTREAM_HEADER,
    EchoUpstream,
)
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)
from sidecar.testing.recorder import Answer, is_envelope, parse_answers

SEED = int(os.environ.get("SIDECAR_FUZZ_SEED", "13"))
INPUTS = int(os.environ.get("SIDECAR_FUZZ_INPUTS", "5000"))
WORKERS = 12
CASE_DEADLINE = 20.0  # far above every server timeout below: reaching it means a hang
MAX_BODY_MB = 1
SERVER_CONFIG = f"""
[server]
header_timeout_seconds = 0.5
body_timeout_seconds = 0.5
request_timeout_seconds = 2
idle_timeout_seconds = 2
max_body_mb = {MAX_BODY_MB}

[guardrails]
secrets = "redact"
pii = "redact"
"""

MARKER_RE = re.compile(rb"(?:upstream-500)?m[0-9]{6}-[0-9a-f]{8}")
CONTROL = [bytes([c]) for c in [*range(0, 9), *range(10, 32), 127]]
HIGH = [bytes([c]) for c in range(128, 256)]
NON_LATIN1 = ["€", "日本", "😀", "Ω", "ā"]
LATIN1 = ["é", "ñ", "ü", "ß"]
FUZZED_HEADERS = [
    b"x-claude-code-session-id", b"x-claude-code-agent-id", b"anthropic-version", b"anthropic-beta",
    b"user-agent", b"x-api-key", b"x-note", b"content-type", b"accept", b"x-stainless-lang", b"authorization",
    b"Host", b"connection", b"expect", b"x-sidecar-token", b"accept-encoding", b"content-encoding",
    b"transfer-encoding", b"origin", MARKER_HEADER.encode(), b"cache-control", b"x-sidecar-cache",
]


@dataclass
class Case:
    """One input: the bytes to send (and how), and what a correct sidecar answers."""

    kind: str
    pieces: list[bytes]
    markers: list[str]  # the good requests in it, in order: each answer must echo its marker
    bad: bool | None  # True: a 4xx envelope first; False: good answers; None: either
    pause: float = 0.0  # seconds between pieces
    half_close: bool = False  # shut our write side after sending
    endless: bytes = b""  # keep sending this until the sidecar answers
    may_drop: bool = False  # the sidecar may close without answering (we hung up first)
    expect: list[int] | None = None  # exactly these statuses, in order (2xx ones echo `markers` in order)


@dataclass
class Outcome:
    answers: list[Answer] = field(default_factory=list)
    trailing: bytes = b""
    timed_out: bool = False
    reset: bool = False


# ------------------------------------------------------------------ building requests


class Gen:
    """Seeded generator of fuzz cases."""

    def __init__(self, seed: int, host: bytes) -> None:
        self.r = random.Random(seed)
        self.host = host
        self.n = 0

    def marker(self) -> str:
        self.n += 1
        return f"m{self.n:06d}-{self.r.getrandbits(32):08x}"

    def body(self, marker: str, *, stream: bool = False, extra: dict[str, object] | None = None) -> bytes:
        obj: dict[str, object] = {
            "model": "claude-opus-4-8",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": marker}],
        }
        if stream:
            obj["stream"] = True
        obj.update(extra or {})
        return json.dumps(obj).encode()

    def headers(self, marker: str) -> list[tuple[bytes, bytes]]:
        return [
            (b"Host", self.host),
            (b"content-type", b"application/json"),
            (b"anthropic-version", b"2023-06-01"),
            (b"x-api-key", b"sk-fuzz"),
            (b"user-agent", b"claude-cli/2.0 (fuzz)"),
            (MARKER_HEADER.encode(), marker.encode()),
            (b"x-claude-code-session-id", f"sess-{marker}".encode()),
        ]

    def request(
        self,
        marker: str,
        *,
        method: bytes = b"POST",
        target: bytes = b"/v1/messages?beta=true",
        version: bytes = b"HTTP/1.1",
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes | None = None,
        close: bool = True,
        length: bool = True,
        stream: bool = False,
    ) -> bytes:
        body = self.body(marker, stream=stream) if body is None else body
        hs = self.headers(marker) if headers is None else headers
        if length:
            hs = [*hs, (b"Content-Length", str(len(body)).encode())]
        if close:
            hs = [*hs, (b"Connection", b"close")]
        head = method + b" " + target + b" " + version + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs)
        return head + b"\r\n" + body

    def good(self) -> Case:
        m = self.marker()
        return Case("good", [self.request(m, stream=self.r.random() < 0.4)], [m], False)

    def dirty_value(self) -> tuple[bytes, str]:
        """A header value with at least one byte outside visible ASCII, and what it holds."""
        r = self.r
        kind = r.choice(["control", "high", "non-latin1", "latin1", "mixed"])
        parts = [b"v"]
        for _ in range(r.randint(1, 4)):
            k = kind if kind != "mixed" else r.choice(["control", "high", "non-latin1", "latin1"])
            if k == "control":
                parts.append(r.choice(CONTROL))
            elif k == "high":
                parts.append(r.choice(HIGH))
            elif k == "non-latin1":
                parts.append(r.choice(NON_LATIN1).encode())
            else:
                parts.append(r.choice(LATIN1).encode())
            parts.append(b"x")
        return b"".join(parts), kind

    def header_value(self) -> Case:
        m = self.marker()
        hs = self.headers(m)
        name = self.r.choice(FUZZED_HEADERS)
        value, kind = self.dirty_value()
        hs = [(k, v) for k, v in hs if k.lower() != name] + [(name, value)]
        self.r.shuffle(hs)
        if not any(k == b"Host" for k, _ in hs):
            hs.append((b"Host", self.host))
        # Refused: control bytes, bytes that are not UTF-8, a recorded id that is not visible
        # ASCII. Valid UTF-8 elsewhere goes upstream exactly as sent.
        try:
            value.decode("utf-8")
            utf8 = True
        except UnicodeDecodeError:
            utf8 = False
        refused = (kind in ("control", "mixed") and any(c in value for c in CONTROL)) or not utf8
        refused = refused or name in (b"x-claude-code-session-id", b"x-claude-code-agent-id")
        return Case(f"header-value-{kind}", [self.request(m, headers=hs)], [m], True if refused else None)

    def header_name(self) -> Case:
        m = self.marker()
        r = self.r
        junk = r.choice([b" ", b"(", b"@", b"\x00", b"\x7f", b"\xff", "é".encode(), b"\t", b"\"", b"/", b"["])
        name = b"x-" + junk + b"name" if r.random() < 0.5 else junk + b"x-name"
        hs = [*self.headers(m), (name, b"v")]
        return Case("header-name", [self.request(m, headers=hs)], [], True)

    def header_line(self) -> Case:
        """Malformed header lines: no colon, obs-fold, space before colon, bare CR or LF."""
        m = self.marker()
        r = self.r
        broken = r.choice([
            b"no-colon-here", b" folded continuation", b"\tfolded", b"x-space : v", b":empty-name",
            b"x-cr: a\rb", b"x-lf-only: a\nb", b"x-nul: a\x00b",
        ])
        hs = self.headers(m)
        body = self.body(m)
        head = b"POST /v1/messages HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs)
        head += broken + b"\r\n" + b"Content-Length: %d\r\nConnection: close\r\n" % len(body)
        return Case("header-line", [head + b"\r\n" + body], [], True)

    def query(self) -> Case:
        m = self.marker()
        r = self.r
        kind = r.choice(["pct-non-ascii", "pct-control", "pct-crlf-smuggle", "raw-high", "raw-control", "raw-utf8", "pct-ok"])
        if kind == "pct-non-ascii":  # UTF-8 (decodes to non-ASCII: refused) or stray bytes (kept encoded)
            if r.random() < 0.5:
                q = b"beta=" + b"".join(b"%%%02X" % b for b in r.choice(NON_LATIN1 + LATIN1).encode())
            else:
                q = b"beta=" + b"".join(b"%%%02X" % r.randint(128, 255) for _ in range(r.randint(1, 4)))
        elif kind == "pct-control":
            q = b"beta=true%" + b"%02x" % r.choice([*range(0, 32), 127])
        elif kind == "pct-crlf-smuggle":
            q = b"beta=true%20HTTP/1.1%0d%0aHost:%20x%0d%0aContent-Length:%200%0d%0a%0d%0aPOST%20/v1/messages%20HTTP/1.1%0d%0aX-Pad:%20"
        elif kind == "raw-high":
            q = b"beta=" + r.choice(HIGH)
        elif kind == "raw-control":
            q = b"beta=" + r.choice(CONTROL)
        elif kind == "raw-utf8":
            q = b"beta=" + r.choice(NON_LATIN1).encode()
        else:
            q = b"beta=%74rue&x=%41%42"
        target = b"/v1/messages?" + q
        if kind.startswith("pct-"):  # forwarded as the client encoded it
            return Case("query-" + kind, [self.request(m, target=target)], [m], False)
        return Case("query-" + kind, [self.request(m, target=target)], [], True)

    def request_line(self) -> Case:
        m = self.marker()
        r = self.r
        kind = r.choice(["method", "version", "target", "garbage", "absolute", "long-target", "extra-spaces"])
        if kind == "method":
            method = r.choice([b"post", b"PUT", b"DELETE", b"PATCH", b"GET", b"P\x00ST", b"POST\x7f", b"CONNECT", b"TRACE", b"OPTIONS"])
            return Case("line-method", [self.request(m, method=method)], [], True)
        if kind == "version":
            version = r.choice([b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.9", b"HTTP/1", b"HTTPS/1.1", b"http/1.1", b"HTTP/1.1x"])
            return Case("line-version", [self.request(m, version=version)], [], None, may_drop=True)
        if kind == "target":
            target = r.choice([b"/v1/messages/../healthz", b"//v1/messages", b"/v1/Messages", b"/v1/messages#frag", b"*", b"/%00", b"/v1/%ff", b"/\xff"])
            return Case("line-target", [self.request(m, target=target)], [m], None)
        if kind == "absolute":
            target = b"http://127.0.0.1/v1/messages"
            return Case("line-absolute", [self.request(m, target=target)], [m], None)
        if kind == "long-target":
            target = b"/v1/messages?beta=" + b"a" * r.choice([9000, 20000, 70000])
            return Case("line-long", [self.request(m, target=target)], [], True, may_drop=True)
        if kind == "extra-spaces":
            return Case("line-spaces", [self.request(m, target=b"/v1/messages  ")], [m], None)
        junk = bytes(r.getrandbits(8) for _ in range(r.randint(1, 200)))
        return Case("line-garbage", [junk + b"\r\n\r\n"], [], True, may_drop=True)

    def framing(self) -> Case:
        """Content-Length / Transfer-Encoding conflicts and broken chunked bodies."""
        m = self.marker()
        r = self.r
        body = self.body(m)
        hs = [*self.headers(m), (b"Connection", b"close")]
        kind = r.choice(["cl-te", "cl-cl", "cl-sign", "cl-junk", "te-unknown", "te-double", "chunk-bad", "chunk-ok", "chunk-ext", "te-http10"])

        def chunked(data: bytes, size_fmt: bytes = b"%x") -> bytes:
            cut = r.randint(1, max(1, len(data) - 1))
            out = b""
            for piece in (data[:cut], data[cut:]):
                out += (size_fmt % len(piece)) + b"\r\n" + piece + b"\r\n"
            return out + b"0\r\n\r\n"

        def build(extra: list[tuple[bytes, bytes]], payload: bytes, version: bytes = b"HTTP/1.1") -> bytes:
            head = b"POST /v1/messages " + version + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs + extra)
            return head + b"\r\n" + payload

        if kind == "cl-te":
            data = build([(b"Content-Length", b"%d" % len(body)), (b"Transfer-Encoding", b"chunked")], chunked(body))
        elif kind == "cl-cl":
            data = build([(b"Content-Length", b"%d" % len(body)), (b"Content-Length", b"%d" % (len(body) + 3))], body)
        elif kind == "cl-sign":
            data = build([(b"Content-Length", b"+%d" % len(body))], body)
        elif kind == "cl-junk":
            data = build([(b"Content-Length", r.choice([b"abc", b"1 2", b"-1", b"0x10", b"99999999999999999999999"]))], body)
        elif kind == "te-unknown":
            data = build([(b"Transfer-Encoding", r.choice([b"gzip", b"identity", b"chunked, gzip", b"xchunked"]))], chunked(body))
        elif kind == "te-double":
            data = build([(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"chunked")], chunked(body))
        elif kind == "chunk-bad":
            data = build([(b"Transfer-Encoding", b"chunked")], chunked(body, r.choice([b"%x ", b"0x%x", b"-%x", b"%xg", b"+%x"])))
        elif kind == "chunk-ok":
            return Case("framing-chunked", [build([(b"Transfer-Encoding", b"chunked")], chunked(body))], [m], False)
        elif kind == "chunk-ext":
            return Case("framing-chunk-ext", [build([(b"Transfer-Encoding", b"chunked")], chunked(body, b"%x;ext=1"))], [m], None)
        else:
            return Case("framing-te-http10", [build([(b"Transfer-Encoding", b"chunked")], chunked(body), b"HTTP/1.0")], [], None)
        return Case("framing-" + kind, [data], [], True, may_drop=kind in ("cl-sign",))

    def expect(self) -> Case:
        m = self.marker()
        hs = [*self.headers(m)]
        if self.r.random() < 0.6:
            hs.append((b"Expect", self.r.choice([b"100-continue", b"100-Continue"])))
            return Case("expect-100", [self.request(m, headers=hs)], [m], False)
        hs.append((b"Expect", self.r.choice([b"200-ok", b"foo", b"100-continue, x", b""])))
        return Case("expect-other", [self.request(m, headers=hs)], [], None)

    def bad_body(self) -> Case:
        m = self.marker()
        r = self.r
        good = self.body(m)
        kind = r.choice(["truncated-json", "not-object", "wrong-types", "invalid-utf8", "empty", "deep", "deep-ok", "surrogate", "nul", "huge-number"])
        bad: bool | None = True
        markers: list[str] = []
        if kind == "truncated-json":
            body = good[: r.randint(0, len(good) - 1)]
        elif kind == "not-object":
            body = r.choice([b"[]", b"1", b'"s"', b"null", b"true"])
        elif kind == "wrong-types":
            body = self.body(m, extra=r.choice([{"model": 5}, {"stream": "yes"}, {"max_tokens": "x"}, {"model": None, "stream": 1}]))
        elif kind == "invalid-utf8":
            body = good.replace(m.encode(), m.encode() + r.choice(HIGH))
        elif kind == "empty":
            body = b""
        elif kind == "deep":
            depth = r.randint(1000, 20000)
            body = good[:-1] + b', "metadata": ' + b"[" * depth + b"]" * depth + b"}"
        elif kind == "deep-ok":
            depth = r.randint(20, 999)
            body = good[:-1] + b', "system": ' + b'[{"type":"text","text":"s","x":' * 1 + b"[" * depth + b"]" * depth + b"}]}"
            bad = None
            markers = [m]
        elif kind == "surrogate":
            body = good[:-1] + b', "system": "a\\ud800b\\udfffc"}'
            bad, markers = None, [m]
        elif kind == "nul":
            body = good[:-1] + b', "system": "a\\u0000b"}'
            bad, markers = None, [m]
        else:
            body = good[:-1] + b', "temperature": 1e999999}'
            bad, markers = None, [m]
        return Case("body-" + kind, [self.request(m, body=body)], markers, bad)

    def encoding(self) -> Case:
        m = self.marker()
        hs = self.headers(m)
        if self.r.random() < 0.7:
            enc = self.r.choice([b"gzip", b"deflate", b"br", b"zstd", b"x-unknown", b"gzip, gzip"])
            return Case("encoding-plain", [self.request(m, headers=[*hs, (b"Content-Encoding", enc)])], [], True)
        body = gzip.compress(self.body(m))
        return Case("encoding-gzip", [self.request(m, headers=[*hs, (b"Content-Encoding", b"gzip")], body=body)], [m], None)

    def sizes(self) -> Case:
        m = self.marker()
        r = self.r
        kind = r.choice(["cl-over", "chunked-over", "huge-header", "many-headers"])
        hs = self.headers(m)
        if kind == "cl-over":
            n = MAX_BODY_MB * 1024 * 1024 + r.randint(1, 1 << 30)
            head = b"POST /v1/messages HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs)
            head += b"Content-Length: %d\r\n\r\n" % n
            return Case("size-cl-over", [head, b"{" + b" " * 1000], [], True, may_drop=True)
        if kind == "chunked-over":
            head = b"POST /v1/messages HTTP/1.1\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in hs)
            head += b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\n{\r\n"
            return Case("size-chunked-over", [head], [], True, endless=b"10000\r\n" + b" " * 0x10000 + b"\r\n", may_drop=True)
        if kind == "huge-header":
            hs = [*hs, (b"x-big", b"a" * r.choice([8200, 20000, 100000]))]
            return Case("size-header", [self.request(m, headers=hs)], [], True, may_drop=True)
        hs = [*hs, *[(b"x-h%d" % i, b"v") for i in range(r.choice([130, 300, 1000]))]]
        return Case("size-many-headers", [self.request(m, headers=hs)], [], True, may_drop=True)

    def slow(self) -> Case:
        """Stalled heads and bodies, truncated bodies and bodies that trickle forever."""
        m = self.marker()
        r = self.r
        full = self.request(m)
        head_end = full.index(b"\r\n\r\n") + 4
        kind = r.choice(["stalled-head", "stalled-body", "truncated-eof", "trickle", "head-eof"])
        if kind == "stalled-head":
            return Case("slow-stalled-head", [full[: r.randint(1, head_end - 2)]], [], True, may_drop=True)
        if kind == "stalled-body":
            return Case("slow-stalled-body", [full[: r.randint(head_end, len(full) - 1)]], [], True)
        if kind == "truncated-eof":
            return Case("slow-truncated-eof", [full[: r.randint(head_end, len(full) - 1)]], [], True, half_close=True, may_drop=True)
        if kind == "head-eof":
            return Case("slow-head-eof", [full[: r.randint(1, head_end - 2)]], [], True, half_close=True, may_drop=True)
        head = full[:head_end].replace(b"Content-Length: %d" % (len(full) - head_end), b"Transfer-Encoding: chunked")
        return Case("slow-trickle", [head], [], True, endless=b"1\r\n \r\n", pause=0.1, may_drop=True)

    def keepalive(self) -> Case:
        """Several good requests on one connection, pipelined or one after another."""
        r = self.r
        n = r.randint(2, 6)
        markers, pieces = [], []
        for i in range(n):
            m = self.marker()
            if r.random() < 0.05:
                m = FAIL_PREFIX + m
            target = r.choice([b"/v1/messages", b"/v1/messages?beta=true"])
            pieces.append(self.request(m, target=target, close=i == n - 1, stream=r.random() < 0.4))
            markers.append(m)
        pipelined = r.random() < 0.5
        if pipelined:
            return Case("keepalive-pipelined", [b"".join(pieces)], markers, False)
        return Case("keepalive-serial", pieces, markers, False, pause=0.01)

    def mixed_keepalive(self) -> Case:
        """Good requests and refused ones that keep the connection, on one connection."""
        r = self.r
        n = r.randint(2, 6)
        pieces, markers, expect = [], [], []
        for i in range(n):
            m = self.marker()
            close = i == n - 1
            kind = r.choice(["good", "good", "bad-session", "bad-body", "no-route", "healthz"])
            if kind == "good":
                pieces.append(self.request(m, close=close, stream=r.random() < 0.4))
                markers.append(m)
                expect.append(200)
            elif kind == "bad-session":
                hs = [(k, b"s p a c e" if k == b"x-claude-code-session-id" else v) for k, v in self.headers(m)]
                pieces.append(self.request(m, headers=hs, close=close))
                expect.append(400)
            elif kind == "bad-body":
                pieces.append(self.request(m, body=self.body(m, extra={"stream": "yes"}), close=close))
                expect.append(400)
            elif kind == "no-route":
                pieces.append(self.request(m, target=b"/v1/nothing", close=close))
                expect.append(404)
            else:
                pieces.append(self.request(m, method=b"GET", target=b"/healthz", body=b"", close=close))
                expect.append(200)
                markers.append("")  # answered by the sidecar itself: no marker
        pipelined = r.random() < 0.5
        data = [b"".join(pieces)] if pipelined else pieces
        return Case("keepalive-mixed", data, markers, False, pause=0.01, expect=expect)

    def flips(self) -> Case:
        """A good request with a few random bytes changed (never inside the marker)."""
        m = self.marker()
        data = bytearray(self.request(m))
        spans = [(i, i + len(m)) for i in _find_all(bytes(data), m.encode())]
        for _ in range(self.r.randint(1, 3)):
            pos = self.r.randrange(len(data))
            if any(a <= pos < b for a, b in spans):
                continue
            data[pos] = self.r.getrandbits(8)
        return Case("flips", [bytes(data)], [m], None, may_drop=True)

    def host_origin(self) -> Case:
        m = self.marker()
        hs = [(k, v) for k, v in self.headers(m) if k != b"Host"]
        kind = self.r.choice(["foreign", "origin", "missing", "double"])
        if kind == "foreign":
            hs.append((b"Host", self.r.choice([b"evil.example", b"127.0.0.1.evil.example", b"10.0.0.1:8787"])))
        elif kind == "origin":
            hs += [(b"Host", self.host), (b"Origin", b"http://localhost:3000")]
        elif kind == "missing":
            return Case("host-missing", [self.request(m, headers=hs)], [m], None)
        else:
            hs += [(b"Host", self.host), (b"Host", b"evil.example")]
            return Case("host-double", [self.request(m, headers=hs)], [], None)
        return Case("host-" + kind, [self.request(m, headers=hs)], [], True)

    def case(self) -> Case:
        kinds = [
            (self.good, 6), (self.header_value, 14), (self.header_name, 4), (self.header_line, 4), (self.query, 8),
            (self.request_line, 8), (self.framing, 8), (self.expect, 4), (self.bad_body, 10), (self.encoding, 4),
            (self.sizes, 3), (self.slow, 2), (self.keepalive, 6), (self.mixed_keepalive, 6), (self.flips, 8), (self.host_origin, 3),
        ]
        make = self.r.choices([k for k, _ in kinds], [w for _, w in kinds])[0]
        return make()


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, i = [], data.find(needle)
    while i >= 0:
        out.append(i)
        i = data.find(needle, i + 1)
    return out


# ------------------------------------------------------------------ sending and reading


async def send(port: int, case: Case) -> Outcome:
    """Send `case` on a fresh connection and read until the sidecar closes it."""
    out = Outcome()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def write() -> None:
        for i, piece in enumerate(case.pieces):
            writer.write(piece)
            await writer.drain()
            if case.pause and i < len(case.pieces) - 1:
                await asyncio.sleep(case.pause)
        if case.half_close:
            writer.write_eof()
        while case.endless:
            writer.write(case.endless)
            await writer.drain()
            await asyncio.sleep(case.pause)

    sender = asyncio.ensure_future(write())
    data = b""
    try:
        async with asyncio.timeout(CASE_DEADLINE):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        out.timed_out = True
    except ConnectionError:
        out.reset = True
    finally:
        sender.cancel()
        try:
            await sender
        except (asyncio.CancelledError, ConnectionError, OSError):
            pass
        writer.close()
    out.answers, out.trailing = parse_answers(data)
    return out


def echoed(a: Answer) -> str | None:
    """The marker an answer from the fake upstream carries (header and text must agree)."""
    header = a.headers.get(ECHO_HEADER)
    if not header or (a.status < 300 and header not in a.body.decode("utf-8", "replace")):
        return None  # none found (a flipped byte can hide it from the fake)
    return header


def refusal(a: Answer) -> bool:
    """A 4xx envelope, or the sidecar's deliberate 501 `not_supported` for an endpoint it
    does not serve (the one 5xx it gives on purpose: it tells clients not to retry)."""
    if 400 <= a.status < 500:
        return True
    return a.status == 501 and is_envelope(a) and json.loads(a.body)["error"]["type"] == "not_supported"


def check(case: Case, out: Outcome) -> list[tuple[str, str]]:
    """What is wrong with `out` as the answer to `case`: (short tag, detail) pairs."""
    problems = []
    finals = [a for a in out.answers if a.status >= 200]
    if out.timed_out:
        problems.append(("hung", "no end within the deadline"))
    if out.trailing:
        problems.append(("unparsable", f"answer bytes {out.trailing[:60]!r}"))
    for a in finals:
        upstream = a.headers.get(UPSTREAM_HEADER) == "1"
        if a.status >= 500 and not upstream and not refusal(a):
            problems.append((f"sidecar {a.status}", repr(a.body[:160])))
        if a.status >= 400 and not upstream and not is_envelope(a):
            problems.append((f"{a.status} not an envelope", repr(a.body[:160])))
    got = [echoed(a) for a in finals if a.headers.get(UPSTREAM_HEADER) == "1" and ECHO_HEADER in a.headers]
    own = {m.decode() for p in case.pieces for m in MARKER_RE.findall(p)}
    stray = [g for g in got if g is not None and g not in own]
    if stray:
        problems.append(("cross-talk", f"answers carry {stray}, the requests were {case.markers}"))
    if case.expect is not None:
        statuses = [404 if a.status == 501 and refusal(a) else a.status for a in finals]
        echoes = [echoed(a) or "" for a in finals if a.status < 300]
        if statuses != case.expect or echoes != case.markers:
            problems.append(("mixed keep-alive misanswered", f"{case.expect} / {case.markers}: got {statuses} / {echoes}"))
        return problems
    if case.bad is True:
        if finals and not refusal(finals[0]):
            problems.append((f"bad input answered {finals[0].status}", ""))
        if not finals and not case.may_drop:
            problems.append(("bad input not answered", ""))
    elif case.bad is False:
        if got != case.markers or len(finals) != len(case.markers):
            statuses = [a.status for a in finals]
            problems.append(("good requests misanswered", f"{case.markers} answered {statuses} carrying {got}"))
    elif finals and finals[0].status < 300 and case.markers and got[:1] not in ([None], case.markers[:1]):
        problems.append(("wrong marker", f"answer carries {got}, expected {case.markers[:1]}"))
    return problems


# ------------------------------------------------------------------ the test


@pytest.fixture
async def echo() -> AsyncIterator[EchoUpstream]:
    async with EchoUpstream() as e:
        yield e


@pytest.fixture
async def fuzz_sidecar(echo: EchoUpstream, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(anthropic_config(echo.url, SERVER_CONFIG), hermetic_env) as sc:
        yield sc


async def test_ingress_fuzz(fuzz_sidecar: InProcessSidecar, echo: EchoUpstream) -> None:
    sc = fuzz_sidecar
    port = int(sc.url.rsplit(":", 1)[1])
    gen = Gen(SEED, f"127.0.0.1:{port}".encode())
    cases = [gen.case() for _ in range(INPUTS)]
    failures: dict[str, list[str]] = {}
    kinds: Counter[str] = Counter()
    queue: asyncio.Queue[Case] = asyncio.Queue()
    for c in cases:
        queue.put_nowait(c)

    async def worker() -> None:
        while not queue.empty():
            case = queue.get_nowait()
            kinds[case.kind] += 1
            problems = check(case, await send(port, case))
            for tag, detail in problems:
                failures.setdefault(f"{case.kind}: {tag}", []).append(f"{detail} <- {case.pieces[0][:200]!r}")

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    elapsed = time.monotonic() - t0

    # The daemon is healthy afterwards and still records usage.
    async with aiohttp.ClientSession() as client:
        async with client.get(sc.url + "/healthz") as resp:
            assert resp.status == 200
        session = f"after-fuzz-{SEED}"
        body = {"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "after"}]}
        headers = {"x-api-key": "k", "x-claude-code-session-id": session}
        async with client.post(sc.url + "/v1/messages", json=body, headers=headers) as resp:
            assert resp.status == 200
            assert resp.headers[ECHO_HEADER] == "after"
    rows = await ledger_rows(sc)
    assert any(r["session_id"] == session and r["status"] == 200 for r in rows)

    report = "\n".join(f"{len(v):5d} x {k}\n        e.g. {v[0][:400]}" for k, v in sorted(failures.items()))
    print(f"\nfuzzed {len(cases)} inputs (seed {SEED}) in {elapsed:.1f} s: {dict(sorted(kinds.items()))}")
    assert not failures, f"{sum(map(len, failures.values()))} failing inputs of {len(cases)}:\n{report}"
