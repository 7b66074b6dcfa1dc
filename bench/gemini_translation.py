"""What translating to and from Gemini costs per request, against the passthrough's work.

Passthrough (an Anthropic upstream, a route that names another model): the sidecar reads
the request head and rewrites `model` (decode + encode of the body); the answer's bytes go
back untouched. Gemini: the body is decoded, translated to generateContent and encoded;
the answer (a 50-word streamed reply, or the same as one JSON answer) is translated event
by event. Everything here is CPU on the request path, measured in this process with the
captured Claude Code bodies, so the figures are the latency translation adds.

    python bench/gemini_translation.py            # 76 KB main turn, 2,000 rounds
    python bench/gemini_translation.py --body 116k --rounds 500
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import msgspec

from sidecar.protocol import sse
from sidecar.protocol.anthropic import parse_head
from sidecar.protocol.gemini import build_request
from sidecar.protocol.gemini_response import StreamTranslator, message
from sidecar.protocol.gemini_tools import ToolNames
from sidecar.providers.anthropic import with_model
from sidecar.testing import captures
from sidecar.testing.fake_gemini import Reply, stream_chunks, text, usage_metadata, whole_answer

BODIES = {"2k": "webfetch-summary", "76k": "main-turn-opus", "116k": "main-turn-haiku"}
MODEL = "gemini-3-pro-preview"
WORDS = " ".join(["lorem", "ipsum", "dolor", "sit", "amet"] * 10)


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, float]:
    """p50 and p99 in microseconds."""
    for _ in range(min(50, rounds)):
        fn()
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - t0) / 1000)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def main() -> None:
    """Print the figures."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--body", choices=sorted(BODIES), default="76k")
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args()
    body = captures.load(BODIES[args.body]).body
    reply = Reply((text(WORDS),), words_per_chunk=1)
    parts = [dict(p) for p in reply.parts]
    usage = usage_metadata(reply, parts, len(body) // 4)
    stream = b"".join(b"data: " + msgspec.json.encode(c) + b"\n\n" for c in stream_chunks(reply, parts, usage, MODEL))
    answer = msgspec.json.encode(whole_answer(reply, parts, usage, MODEL))

    def passthrough() -> None:
        parse_head(body)
        with_model(body, MODEL)

    def request() -> None:
        parse_head(body)
        msgspec.json.encode(build_request(msgspec.json.decode(body), MODEL, ToolNames()))

    def streamed() -> None:
        tr = StreamTranslator("claude-opus-4-8", ToolNames())
        out = [sse.encode(n, d) for n, d in tr.feed(stream)]
        out += [sse.encode(n, d) for n, d in tr.end()]

    def whole() -> None:
        msgspec.json.encode(message(answer, "claude-opus-4-8", ToolNames()))

    rows = [
        ("passthrough: head + model rewrite", timed(passthrough, args.rounds)),
        ("gemini: request translation", timed(request, args.rounds)),
        (f"gemini: stream of {len(WORDS.split())} words", timed(streamed, args.rounds)),
        ("gemini: JSON answer", timed(whole, args.rounds)),
    ]
    print(f"body {args.body} ({len(body):,} bytes), {args.rounds} rounds, microseconds")
    print(f"{'':40} {'p50':>9} {'p99':>9}")
    for name, (p50, p99) in rows:
        print(f"{name:40} {p50:9.1f} {p99:9.1f}")
    base = rows[0][1][0]
    added = rows[1][1][0] + rows[2][1][0]
    print(f"request + stream translation: {added:.1f} us p50, {added / base:.1f}x the passthrough's body work ({base:.1f} us)")


if __name__ == "__main__":
    main()
