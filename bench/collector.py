"""What the cache's stream collector costs per streamed answer, in microseconds.

The stream is the one `fake_upstream.py` sends (message_start, content_block_start, ping,
N text deltas, content_block_stop, message_delta, message_stop), handed to
`MessageCollector.on_bytes` one event per chunk as the relay does, then `on_end`.
`--against REV` times the collector of another commit in the same run, interleaved.

    python bench/collector.py                       # this checkout
    python bench/collector.py --against HEAD~1      # and another commit's, side by side
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fake_upstream import Replies  # noqa: E402
from sidecar.cache import replay  # noqa: E402
from sidecar.testing import anthropic_sse as sse  # noqa: E402


def collector_at(rev: str) -> ModuleType:
    """sidecar/cache/replay.py as it is at commit `rev`, as a module."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:sidecar/cache/replay.py"], capture_output=True, check=True).stdout
    spec = importlib.util.spec_from_loader(f"replay_at_{rev}", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the structs' annotations through it
    exec(compile(source, f"{rev}:sidecar/cache/replay.py", "exec"), module.__dict__)
    return module


def per_stream(collector: Any, chunks: list[bytes], n: int) -> float:
    """Microseconds per stream, over `n` streams."""
    t = time.perf_counter()
    for _ in range(n):
        col = collector()
        for chunk in chunks:
            col.on_bytes(chunk)
        col.on_end(True)
    elapsed = (time.perf_counter() - t) / n * 1e6
    assert col.complete and col.message is not None
    return elapsed


def main() -> None:
    """Time the collector(s) and print min and median per stream."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, default=50, help="text deltas per stream")
    parser.add_argument("--against", metavar="REV", help="also time the collector of this commit")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--streams", type=int, default=2000, help="streams per round")
    args = parser.parse_args()
    r = Replies(args.words)
    chunks = sse.stream_events("msg_01BENCH0000000000000001", "claude-opus-4-8", r.content, sse.Usage(19000, args.words), "end_turn")
    targets = {"this checkout": replay.MessageCollector}
    if args.against:
        targets[args.against] = collector_at(args.against).MessageCollector
    times: dict[str, list[float]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, collector in targets.items():
            times[name].append(per_stream(collector, chunks, args.streams))
    print(f"{len(chunks)} events, {sum(map(len, chunks))} bytes per stream; {args.rounds} rounds of {args.streams} streams")
    for name, ts in times.items():
        print(f"{name:>16}: min {min(ts):6.1f} us   median {statistics.median(ts):6.1f} us per stream")


if __name__ == "__main__":
    main()
