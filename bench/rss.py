"""Resident memory of a real sidecar daemon over a long run of Claude Code-sized requests.

A `claude-sidecar start --foreground` daemon (temporary home, default config: ledger and
exact cache on) in front of bench/fake_upstream.py; this process sends N requests made from
the 76 KB main-turn capture, each with its own final user text by default (so every one is
a cache miss, keyed, stored and metered), at concurrency C. The daemon's VmRSS is read from
/proc/PID/status at idle and after every tenth of the run, VmHWM (the peak) at the end.

    python bench/rss.py                          # 10,000 requests, c=8, about a minute
    python bench/rss.py --requests 2000 --same   # one body repeated: exact-cache hits
    python bench/rss.py --stream --json
    python bench/rss.py --no-cache               # [cache] mode = off: what the rest holds

All traffic stays on 127.0.0.1; both child processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import BODIES, FAKE, Child, Sidecar, load_workload, rss_mb, turn_maker  # noqa: E402


def body_maker(template: bytes, same: bool) -> Any:
    """`make(i)`: the request body bytes for request i (a distinct final text unless `same`)."""
    make = turn_maker(template)
    if same:
        fixed = make(0)
        return lambda i: fixed
    return make


async def drive(url: str, headers: dict[str, str], make: Any, n: int, c: int, checkpoints: list[int], pid: int) -> list[dict[str, Any]]:
    """Send `n` requests with `c` workers; the daemon's RSS at each checkpoint."""
    counter = iter(range(n))
    done = 0
    failures = 0
    marks: list[dict[str, Any]] = []
    pending = list(checkpoints)
    t0 = time.perf_counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal done, failures
        for i in counter:
            async with session.post(url + "/v1/messages", data=make(i), headers=headers) as resp:
                await resp.read()
                failures += resp.status != 200
            done += 1
            while pending and done >= pending[0]:
                marks.append({"requests": pending.pop(0), "rss_mb": round(rss_mb(pid), 1), "s": round(time.perf_counter() - t0, 1)})

    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(c)))
    if failures:
        raise RuntimeError(f"{failures} of {n} requests failed")
    return marks


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the fake and the daemon, send the load, read the daemon's memory."""
    wl = load_workload("76k", None)
    template = wl.stream_body if args.stream else wl.json_body
    make = body_maker(template, args.same)
    headers = {k: v for k, v in wl.headers.items() if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
    fake = Child([sys.executable, str(FAKE), "--port", "0"], "fake upstream")
    try:
        with tempfile.TemporaryDirectory(prefix="sidecar-rss-") as home:
            sidecar = Sidecar(Path(home), fake.url, '[cache]\nmode = "off"\n' if args.no_cache else "")
            try:
                time.sleep(1.0)
                idle = rss_mb(sidecar.pid)
                step = max(1, args.requests // 10)
                checkpoints = list(range(step, args.requests + 1, step))
                marks = asyncio.run(drive(sidecar.url, headers, make, args.requests, args.concurrency, checkpoints, sidecar.pid))
                time.sleep(1.0)  # the ledger writer and cache store catch up
                after = rss_mb(sidecar.pid)
                peak = rss_mb(sidecar.pid, "VmHWM")
            finally:
                sidecar.stop()
    finally:
        fake.stop()
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "body_bytes": len(make(0)),
        "bodies": "one body repeated" if args.same else "distinct bodies",
        "stream": args.stream,
        "cache": "off" if args.no_cache else "exact",
        "rss_mb": {"idle": round(idle, 1), "after": round(after, 1), "peak": round(peak, 1)},
        "during": marks,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--same", action="store_true", help="repeat one body (exact-cache hits) instead of distinct ones")
    p.add_argument("--stream", action="store_true", help='send "stream": true')
    p.add_argument("--no-cache", action="store_true", help="run the daemon with [cache] mode = off")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    args = parse_args(argv)
    assert "76k" in BODIES
    res = run(args)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    r = res["rss_mb"]
    print(f"sidecar RSS, {res['requests']:,} requests of {res['body_bytes'] / 1000:.0f} KB ({res['bodies']}, "
          f"{'stream' if res['stream'] else 'JSON'}, c={res['concurrency']}, cache {res['cache']})")  # fmt: skip
    print(f"  idle {r['idle']} MB, after {r['after']} MB, peak {r['peak']} MB")
    for m in res["during"]:
        print(f"  after {m['requests']:>6,} requests ({m['s']:>5.1f} s): {m['rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
