"""The sidecar's resident memory under sustained load: RSS after 5 s and after 60 s of c=8.

Issue 17's bound: RSS after 60 s of c=8 load within 20 MB of RSS after 5 s (no queue that
grows without bound). A `claude-sidecar start --foreground` daemon (temporary home, default
config) in front of bench/fake_upstream.py, the same 76 KB capture bench/overhead.py sends
(one body repeated, so every request re-asks: the cache stores each answer again, the
heaviest default path), JSON or streamed.

    python bench/sustained.py                 # JSON, 60 s
    python bench/sustained.py --stream --seconds 120

All traffic stays on 127.0.0.1; both child processes are stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import FAKE, WORDS, Child, Sidecar, Target, load_workload, rss_mb  # noqa: E402

MARKS = (5, 15, 30, 45)


async def run(url: str, pid: int, stream: bool, seconds: float, body: str) -> str:
    wl = load_workload(body, None)
    t = Target("sidecar", url, pid, wl)
    idle = rss_mb(pid)
    n = 0
    t0 = time.monotonic()
    marks: dict[float, float] = {}

    async def worker() -> None:
        nonlocal n
        while time.monotonic() < t0 + seconds:
            await (t.stream() if stream else t.json())
            n += 1

    async def monitor() -> None:
        for at in (*[m for m in MARKS if m < seconds], seconds):
            await asyncio.sleep(max(0.0, t0 + at - time.monotonic()))
            marks[at] = rss_mb(pid)

    try:
        await asyncio.gather(monitor(), *(worker() for _ in range(8)))
    finally:
        await t.close()
    first, last = marks[MARKS[0]], marks[seconds]
    return (
        f"{'stream' if stream else 'json'} c=8 for {seconds:.0f} s: {n} requests ({n / seconds:.0f}/s); RSS MB idle "
        f"{idle:.1f}, " + ", ".join(f"{k:g} s {v:.1f}" for k, v in marks.items())
        + f"; peak {rss_mb(pid, 'VmHWM'):.1f}; growth from 5 s to {seconds:g} s {last - first:+.1f} MB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--stream", action="store_true", help='send "stream": true')
    p.add_argument("--body", default="76k", help="the capture to send (as bench/overhead.py --body)")
    args = p.parse_args()
    if args.seconds <= MARKS[0]:
        p.error(f"--seconds must be more than {MARKS[0]}")
    home = Path(tempfile.mkdtemp(prefix="sidecar-sustained-"))
    fake = Child([sys.executable, str(FAKE), "--port", "0", "--words", str(WORDS)], "fake")
    try:
        sc = Sidecar(home / "home", fake.url)
        try:
            print(asyncio.run(run(sc.url, sc.pid, args.stream, args.seconds, args.body)))
        finally:
            sc.stop()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
