"""What keying a new turn costs the cache: Claude Code sends a new body every turn (the same
system prompt and tools, one more message), so the exact cache's key memo for repeated bodies
never hits in real use and bench/overhead.py (one body repeated) does not show this cost.

    python bench/keys.py            # 400 turns of the 76 KB main-turn capture, each a new final question

Prints the CPU time per turn through the daemon's path (`KeyMemo.keys`, which finds the scope
by the raw bytes of every field but the messages) against decoding the body and running
`build_keys` on it, in the same run; then the request path's head and keys together
(`parse_head` validates the body in one scan and the keys read that scan) against scanning
the body twice. Thread CPU time, so other load on the machine matters less.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402
from multidict import CIMultiDict  # noqa: E402

from sidecar.cache.keys import KeyMemo, build_keys  # noqa: E402
from sidecar.cache.normalise import RULES, Normaliser  # noqa: E402
from sidecar.protocol.anthropic import parse_head  # noqa: E402
from sidecar.testing.captures import captures_dir  # noqa: E402

TURNS = 400


def main() -> None:
    capture = json.loads((captures_dir() / "main-turn-opus.json").read_text())
    headers = CIMultiDict(capture["headers"])
    bodies = []
    for i in range(TURNS):
        body = dict(capture["body"])
        messages = list(body["messages"])
        messages[-1] = {**messages[-1], "content": [{"type": "text", "text": f"question {i}"}]}
        body["messages"] = messages
        bodies.append(json.dumps(body, separators=(",", ":")).encode())
    memo = KeyMemo(Normaliser(RULES))
    memo.keys(bodies[0], lambda: msgspec.json.decode(bodies[0]), headers, "/v1/messages")
    t0 = time.thread_time()
    for raw in bodies[1:]:
        memo.keys(raw, lambda raw=raw: msgspec.json.decode(raw), headers, "/v1/messages")  # type: ignore[misc]
    path = (time.thread_time() - t0) / (TURNS - 1) * 1e6
    # The request path: parse_head validates the body in one scan, and the keys reuse it.
    head_memo = KeyMemo(Normaliser(RULES))
    head_memo.keys(bodies[0], lambda: msgspec.json.decode(bodies[0]), headers, "/v1/messages")
    t0 = time.thread_time()
    for raw in bodies[1:]:
        head_memo.keys(raw, lambda raw=raw: msgspec.json.decode(raw), headers, "/v1/messages", parse_head(raw).fields)  # type: ignore[misc]
    with_head = (time.thread_time() - t0) / (TURNS - 1) * 1e6
    t0 = time.thread_time()
    for raw in bodies[1:]:
        parse_head(raw)
    head = (time.thread_time() - t0) / (TURNS - 1) * 1e6
    norm = Normaliser(RULES)
    t0 = time.thread_time()
    for raw in bodies[1:]:
        build_keys(msgspec.json.decode(raw), headers, "/v1/messages", norm)
    whole = (time.thread_time() - t0) / (TURNS - 1) * 1e6
    print(f"a new turn of {len(bodies[0]):,} B keyed: {path:.0f} us through KeyMemo (scope remembered), "
          f"{whole:.0f} us decoding the body and running build_keys ({whole / path:.1f}x)")
    print(f"the request path, head and keys: {with_head:.0f} us with the keys reading the head's scan, "
          f"against {head + path:.0f} us scanning the body twice (parse_head alone: {head:.0f} us)")


if __name__ == "__main__":
    main()
