"""Two sidecars and a raw-socket player for the fast-path differential test.

`pair` stands up a sidecar with `[server] fast_path = true` and one without, each against its
own echo upstream behind a TcpRecorder; `play` sends a scenario's rounds on one connection
and probes whether it is still open; `view` turns what came back into comparable lines and
`d1_extras` recognises the one accepted difference (D1, see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import hashlib
import itertools
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sidecar.testing.fake_echo import ECHO_HEADER, MARKER_HEADER, EchoUpstream
from sidecar.testing.harness import InProcessSidecar, anthropic_config, sidecar_in_process
from sidecar.testing.recorder import Answer, TcpRecorder, parse_answers
from tests.sidecar.proxy.fast_path_cases import MAX_BODY_MB, Req, Scenario

BASELINE = os.environ.get("SIDECAR_FAST_PATH_BASELINE") == "1"  # both sidecars without the fast path: a difference is the test's noise
CASE_DEADLINE = 10.0  # far above every server deadline in play: reaching it means a hang
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

    async def wait_for_bytes(self, needle: bytes) -> bool:
        """Wait until `needle` arrived (True) or the server closed (False), framed or not."""
        while needle not in self.data:
            if self.eof:
                return False
            self._changed.clear()
            await self._changed.wait()
        return True


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


def answer_views(out: Outcome) -> tuple[list[list[str]], list[str]]:
    """Each answer as comparable lines (status line, sorted normalised headers, body), and the
    rest: a framing mismatch, bytes after the last whole answer, the connection's fate."""
    answers, rest = parse_answers(out.data)
    heads = _HEAD.findall(out.data)
    blocks: list[list[str]] = []
    for head, a in zip(heads, answers, strict=False):
        status, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        pairs = [(k.strip().lower(), normalise(v.strip())) for k, _, v in (h.partition(":") for h in header_lines)]
        lines = [status, *(f"  {k}: {v}" for k, v in sorted(pairs) if k not in _DROPPED)]
        blocks.append([*lines, "  body: " + normalise(a.body.decode("latin-1"))])
    tail = [f"!! {len(heads)} heads for {len(answers)} answers"] if len(heads) != len(answers) else []
    tail += ["trailing: " + normalise(rest.decode("latin-1")), f"hung={out.hung} closed-early={out.closed} probe={out.probe}"]
    return blocks, tail


def view(out: Outcome) -> list[str]:
    """The outcome as comparable lines: status lines, sorted normalised headers, bodies, fate."""
    blocks, tail = answer_views(out)
    return [line for block in blocks for line in block] + tail


# D1, accepted: valid requests and a malformed one pipelined in ONE read. aiohttp's parser
# drops the messages it parsed in that read and answers only its own 400 (HTTP/1.0, then it
# closes); the lane answers the plain ones first and then hands the malformed one to aiohttp.
_MALFORMED = "HTTP/1.0 400 "  # the status line aiohttp writes itself for bytes it cannot parse


def _answers_request(block: list[str], req: Req) -> bool:
    """`block` is the answer the fast path gives `req` (a request with plain framing)."""
    echoed = next((line.split(": ", 1)[1] for line in block if line.startswith(f"  {ECHO_HEADER}: ")), None)
    if req.kind.startswith("plain-") and not req.kind.startswith("plain-count"):
        return block[0] == "HTTP/1.1 200 OK" and echoed == req.marker
    if req.kind.startswith("plain-count"):
        return block[0] == "HTTP/1.1 200 OK" and echoed is None and block[-1].startswith('  body: {"input_tokens"')
    return req.fast is True and echoed is None and not block[0].startswith("HTTP/1.1 2")  # refused by the ingress (D3)


def d1_extras(scenario: Scenario, fast: Outcome, slow: Outcome) -> list[Req] | None:
    """The requests the fast side answered in addition under D1, or None if the outcomes differ
    otherwise. Exactly D1: the fast answers are the slow ones with extra answers inserted right
    before the slow side's first answer aiohttp made itself for a malformed request; the extra
    answers answer, in order, the plain-framed requests that immediately precede a request the
    lane does not take, in one round (the bytes written together; the writes a round is cut
    into may reach the server as one read); the connection is closed on both after that."""
    (fa, ftail), (sa, stail) = answer_views(fast), answer_views(slow)
    extra = len(fa) - len(sa)
    k = next((i for i, block in enumerate(sa) if block[0].startswith(_MALFORMED)), None)
    if extra <= 0 or k is None or fa[:k] != sa[:k] or fa[k + extra :] != sa[k:]:
        return None
    if ftail[:-1] != stail[:-1] or fast.hung or slow.hung or fast.probe is not None or slow.probe is not None:
        return None
    inserted = fa[k : k + extra]
    for rnd in scenario.rounds:
        for m, req in enumerate(rnd.reqs):
            run = rnd.reqs[m - extra : m] if m >= extra else []
            if req.fast is not True and run and all(r.fast is True and _answers_request(b, r) for b, r in zip(inserted, run, strict=True)):
                return run
    return None


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
