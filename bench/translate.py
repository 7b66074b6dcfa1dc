"""What translation adds: a provider family that speaks another protocol, against the
Anthropic passthrough, through real sidecars, in the same run.

Processes: the fast fake Anthropic upstream (bench/fake_upstream.py); a fast fake of the
family's upstream (for `openai`: this file with --serve-openai, the same raw asyncio
server answering Chat Completions JSON and SSE with 50 content chunks, the finish chunk,
the usage chunk and [DONE]); two sidecar daemons (`python -m sidecar start --foreground`):
one whose only provider is Anthropic, one whose only provider is the family's; and this
process, the load generator.

Four targets get the same 76 KB Claude Code request in rotated blocks: the Anthropic fake
directly, the passthrough sidecar, the family's fake directly (sent the request already
translated, so both directs do the same work), and the translating sidecar. "Added" is
sidecar minus direct for each; the ratio is the translating sidecar's added latency over
the passthrough's.

    python bench/translate.py                     # openai family, 76 KB body, ~1 minute
    python bench/translate.py --quick             # smoke run
    python bench/translate.py --family openai --body 116k --requests 1000 --json

A new family is a FAMILIES entry: how to serve its fake, its provider config, and the
direct request. All traffic stays on 127.0.0.1; every child is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fake_upstream import Conn, Server  # noqa: E402  (bench/ is not a package on the path)
from overhead import BODIES, FAKE, WORDS, Child, _loop_factory, log, pct  # noqa: E402

# ---------------------------------------------------------------- a fast Chat Completions fake


class _Head(msgspec.Struct):
    model: str | None = None
    stream: bool | None = None


_decode_head = msgspec.json.Decoder(_Head).decode
_LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor".split()


class ChatReplies:
    """Pre-rendered Chat Completions replies, keyed by (model, prompt tokens, stream)."""

    def __init__(self, words: int) -> None:
        self.pieces = [(" " if i else "") + _LOREM[i % len(_LOREM)] for i in range(words)]
        self._cache: dict[tuple[str, int, bool], Any] = {}

    def get(self, model: str, prompt: int, stream: bool) -> Any:
        key = (model, prompt, stream)
        if key in self._cache:
            return self._cache[key]
        usage = {"prompt_tokens": prompt, "completion_tokens": len(self.pieces), "total_tokens": prompt + len(self.pieces),
                 "prompt_tokens_details": {"cached_tokens": 0}}  # fmt: skip
        base = {"id": "chatcmpl-bench", "created": 1767225600, "model": model, "system_fingerprint": "fp_bench"}
        if not stream:
            msg = {"role": "assistant", "content": "".join(self.pieces), "refusal": None}
            hit: Any = msgspec.json.encode({**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": msg, "logprobs": None, "finish_reason": "stop"}], "usage": usage})  # fmt: skip
        else:
            chunk = {**base, "object": "chat.completion.chunk"}

            def delta(d: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
                return {**chunk, "choices": [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]}

            items: list[Any] = [delta({"role": "assistant", "content": ""})]
            items += [delta({"content": p}) for p in self.pieces]
            items += [delta({}, "stop"), {**chunk, "choices": [], "usage": usage}]
            events = [b"data: " + msgspec.json.encode(i) + b"\n\n" for i in items] + [b"data: [DONE]\n\n"]
            hit = [b"%x\r\n%b\r\n" % (len(e), e) for e in events]
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[key] = hit
        return hit


class ChatConn(Conn):
    """fake_upstream's connection, also answering POST /v1/chat/completions."""

    def _answer(self, req: Any) -> None:
        path = req.path.split(b"?", 1)[0]
        if req.method != b"POST" or path != b"/v1/chat/completions":
            super()._answer(req)
            return
        head = _decode_head(req.body)
        reply = self.s.chat.get(head.model or "gpt", max(1, len(req.body) // 4), bool(head.stream))  # type: ignore[attr-defined]
        if head.stream:
            self._stream(reply, req)
        else:
            self._simple(b"200 OK", b"application/json", reply, req)


def serve_openai(words: int) -> None:
    """Serve the Chat Completions fake until SIGTERM (prints `listening on URL`)."""

    async def main() -> None:
        state = Server(words)
        state.chat = ChatReplies(words)  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: ChatConn(state), "127.0.0.1", 0, backlog=1024)
        print(f"listening on http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        server.close()

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


# ---------------------------------------------------------------- families


@dataclass(frozen=True)
class Family:
    """How to bench one translating provider family."""

    serve_flag: str  # this file's flag that serves its fake
    config: Callable[[str], str]  # provider config text for the fake's root URL
    direct_path: str  # the fake's endpoint
    direct_body: Callable[[dict[str, Any], bool], bytes]  # the translated request


def _openai_body(body: dict[str, Any], stream: bool) -> bytes:
    from sidecar.protocol.openai import quirks_for, translate_request

    chat, _ = translate_request(body, body["model"], quirks_for("bench", "openai-compatible", {}), stream)
    return msgspec.json.encode(chat)


FAMILIES = {
    "openai": Family(
        "--serve-openai",
        lambda url: f'[[providers]]\nname = "bench"\ntype = "openai-compatible"\nbase_url = "{url}/v1"\n',
        "/v1/chat/completions",
        _openai_body,
    ),
}


# ---------------------------------------------------------------- load


@dataclass
class Target:
    name: str
    url: str
    bodies: dict[bool, bytes]  # stream -> body
    headers: dict[str, str]
    json_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    whole_ms: list[float] = field(default_factory=list)

    async def json(self, s: aiohttp.ClientSession) -> bytes:
        t0 = time.perf_counter()
        async with s.post(self.url, data=self.bodies[False], headers=self.headers) as r:
            body = await r.read()
            if r.status != 200:
                raise RuntimeError(f"{self.name}: HTTP {r.status}: {body[:300]!r}")
        self.json_ms.append((time.perf_counter() - t0) * 1000)
        return body

    async def stream(self, s: aiohttp.ClientSession) -> bytes:
        t0 = time.perf_counter()
        first = None
        parts = []
        async with s.post(self.url, data=self.bodies[True], headers=self.headers) as r:
            if r.status != 200:
                raise RuntimeError(f"{self.name}: HTTP {r.status}: {(await r.read())[:300]!r}")
            async for chunk in r.content.iter_any():
                parts.append(chunk)
                if first is None and b"\n\n" in b"".join(parts):
                    first = time.perf_counter()
        end = time.perf_counter()
        self.first_ms.append(((first or end) - t0) * 1000)
        self.whole_ms.append((end - t0) * 1000)
        return b"".join(parts)


def _stats(values: Sequence[float]) -> dict[str, float]:
    v = sorted(values)
    return {"p50": round(pct(v, 50), 3), "p99": round(pct(v, 99), 3), "n": len(v)}


async def measure(targets: list[Target], requests: int, blocks: int, warmup: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=16, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("Accept-Encoding",)) as s:
        for t in targets:
            for _ in range(warmup):
                await t.json(s)
                await t.stream(s)
        checks = {t.name: _check(await t.json(s), await t.stream(s)) for t in targets}
        for t in targets:
            t.json_ms.clear(), t.first_ms.clear(), t.whole_ms.clear()
        per_block = max(1, requests // blocks)
        for i in range(blocks):
            order = targets[i % len(targets):] + targets[: i % len(targets)]
            for t in order if i % 2 == 0 else order[::-1]:
                for _ in range(per_block):
                    await t.json(s)
                for _ in range(per_block):
                    await t.stream(s)
    out: dict[str, Any] = {"checks": checks}
    for t in targets:
        out[t.name] = {"json": _stats(t.json_ms), "first_event": _stats(t.first_ms), "whole_stream": _stats(t.whole_ms)}
    return out


def _check(whole: bytes, stream: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(whole)
    except ValueError:
        obj = {}
    return {"json_ok": bool(obj.get("choices") or obj.get("type") == "message"),
            "stream_complete": b"message_stop" in stream or b"[DONE]" in stream}  # fmt: skip


def table(family: str, meta: dict[str, Any], res: dict[str, Any]) -> str:
    names = ["direct-anthropic", "sidecar-anthropic", f"direct-{family}", f"sidecar-{family}"]
    lines = [
        f"translation overhead, family {family}: {meta['body_name']} ({meta['body_bytes']:,} B), {WORDS} text deltas, "
        f"{meta['requests']} requests per target per scenario in {meta['blocks']} rotated blocks, c=1",
        "",
        f"{'ms p50 / p99':<22}" + "".join(f"{n:>20}" for n in names) + f"{'passthrough +':>16}{'translated +':>16}{'ratio':>8}",
    ]
    for key, label in (("json", "json latency"), ("first_event", "stream first event"), ("whole_stream", "whole stream")):
        cells = [f"{res[n][key]['p50']:.2f} / {res[n][key]['p99']:.2f}" for n in names]
        passthrough = res[names[1]][key]["p50"] - res[names[0]][key]["p50"]
        translated = res[names[3]][key]["p50"] - res[names[2]][key]["p50"]
        ratio = translated / passthrough if passthrough > 0 else float("nan")
        lines.append(f"{label:<22}" + "".join(f"{c:>20}" for c in cells) + f"{passthrough:>+15.2f} {translated:>+15.2f} {ratio:>7.1f}x")
    lines.append("")
    lines.append("checks: " + ", ".join(f"{n} {'ok' if all(c.values()) else c}" for n, c in res["checks"].items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--family", choices=sorted(FAMILIES), default="openai")
    p.add_argument("--body", choices=sorted(BODIES), default="76k")
    p.add_argument("--requests", type=int, help="per target per scenario (default 600; --quick 60)")
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--warmup", type=int, help="per target (default 40; --quick 10)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--serve-openai", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve_openai:
        serve_openai(WORDS)
        return 0
    args.requests = args.requests or (60 if args.quick else 600)
    args.warmup = args.warmup if args.warmup is not None else (10 if args.quick else 40)
    fam = FAMILIES[args.family]

    from sidecar.testing import captures
    from sidecar.testing.harness import anthropic_config, start_child

    cap = captures.load(BODIES[args.body].removesuffix(".json"))
    body = dict(cap.data["body"])
    anth = {s: json.dumps({**body, "stream": s}, separators=(",", ":"), ensure_ascii=False).encode() for s in (False, True)}
    headers = dict(cap.headers)
    home = Path(tempfile.mkdtemp(prefix="sidecar-bench-translate-"))
    started: list[Any] = []
    try:
        anth_fake = Child([sys.executable, str(FAKE), "--port", "0", "--words", str(WORDS)], "fake anthropic")
        started.append(anth_fake)
        fam_fake = Child([sys.executable, __file__, fam.serve_flag], f"fake {args.family}")
        started.append(fam_fake)
        passthrough = start_child(home / "passthrough", anthropic_config(anth_fake.url))
        started.append(passthrough)
        translating = start_child(home / "translating", fam.config(fam_fake.url))
        started.append(translating)
        direct_fam = {s: fam.direct_body({**body, "stream": s}, s) for s in (False, True)}
        targets = [
            Target("direct-anthropic", anth_fake.url + "/v1/messages", anth, headers),
            Target("sidecar-anthropic", passthrough.url + "/v1/messages", anth, headers),
            Target(f"direct-{args.family}", fam_fake.url + fam.direct_path, direct_fam, {"content-type": "application/json"}),
            Target(f"sidecar-{args.family}", translating.url + "/v1/messages", anth, headers),
        ]
        log(f"{len(targets)} targets, {args.requests} requests per target per scenario")
        t0 = time.perf_counter()
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            res = runner.run(measure(targets, args.requests, args.blocks, args.warmup))
        meta = {"body_name": cap.name, "body_bytes": len(anth[False]), "requests": args.requests, "blocks": args.blocks,
                "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        print(json.dumps({"meta": meta, **res}, indent=2) if args.json else table(args.family, meta, res), flush=True)
        return 0
    finally:
        for proc in reversed(started):
            proc.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
