"""How long a dying target costs: from its death until traffic has left it.

Two fast fake upstreams (bench/fake_upstream.py) behind one route (weights 1:1, each the
other's fallback) in a real sidecar daemon. A steady load (concurrency 4, streaming, the
2 KB body) runs; then one upstream dies, in one of two ways:

- `refused`: the process is killed; connects are refused at once;
- `hung`: the process is stopped (SIGSTOP); it accepts connections but never answers, so
  each attempt costs the route's first-byte timeout until the breaker opens.

Reported per mode: the time from the death to the breaker's `open` event (from the control
API's event stream), how many requests were slowed and by how much, and that no request
failed (every one was served by the survivor).

    python bench/failover.py                # both modes, ~30 s
    python bench/failover.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead import Child  # noqa: E402

from sidecar.testing.harness import start_child  # noqa: E402

FIRST_BYTE_TIMEOUT = 1.0
BODY = json.dumps(
    {"model": "claude-opus-4-8", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "hi " * 500}]}
)
HEADERS = {"x-api-key": "sk-ant-bench", "anthropic-version": "2023-06-01", "content-type": "application/json"}


def config(a: str, b: str) -> str:
    return (
        f'[[providers]]\nname = "a"\ntype = "anthropic"\nbase_url = "{a}"\nconnect_timeout = 2\n\n'
        f'[[providers]]\nname = "b"\ntype = "anthropic"\nbase_url = "{b}"\nconnect_timeout = 2\n\n'
        '[[routes]]\nname = "main"\nmatch = { model = "*" }\naffinity = false\n'
        'targets = [{ provider = "a" }, { provider = "b" }]\n'
        f"timeouts = {{ first_byte = {FIRST_BYTE_TIMEOUT} }}\n"
        "[routing.retry]\nrounds = 0\n[routing.breaker]\nfailures = 3\ncooldown = 60\n"
    )


async def watch_breaker(url: str, token: str, opened: dict[str, float]) -> None:
    async with aiohttp.ClientSession() as s, s.get(url + "/sidecar/v1/events", headers={"authorization": f"Bearer {token}"}) as r:
        event = ""
        async for line in r.content:
            text = line.decode().strip()
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:") and event == "breaker":
                data = json.loads(text[5:])
                if data["state"] == "open":
                    opened[data["target"]] = time.perf_counter()


async def load(url: str, stop: asyncio.Event, samples: list[tuple[float, float, str, int]]) -> None:
    async with aiohttp.ClientSession() as s:
        while not stop.is_set():
            t0 = time.perf_counter()
            async with s.post(url + "/v1/messages", data=BODY, headers=HEADERS) as r:
                await r.read()
                samples.append((t0, time.perf_counter() - t0, r.headers.get("x-sidecar-upstream", ""), r.status))


async def run_mode(mode: str, home: Path) -> dict[str, Any]:
    a = Child([sys.executable, str(HERE / "fake_upstream.py"), "--port", "0", "--words", "20"], "fake a")
    b = Child([sys.executable, str(HERE / "fake_upstream.py"), "--port", "0", "--words", "20"], "fake b")
    sc = await asyncio.to_thread(start_child, home, config(a.url, b.url))
    opened: dict[str, float] = {}
    samples: list[tuple[float, float, str, int]] = []
    stop = asyncio.Event()
    try:
        watcher = asyncio.get_running_loop().create_task(watch_breaker(sc.url, sc.token, opened))
        workers = [asyncio.get_running_loop().create_task(load(sc.url, stop, samples)) for _ in range(4)]
        await asyncio.sleep(3.0)
        before = [d for _, d, _, _ in samples]
        os.kill(a.pid, signal.SIGKILL if mode == "refused" else signal.SIGSTOP)
        died = time.perf_counter()
        await asyncio.sleep(4.0 + FIRST_BYTE_TIMEOUT * 3)
        stop.set()
        await asyncio.gather(*workers)
        watcher.cancel()
    finally:
        if mode == "hung":
            os.kill(a.pid, signal.SIGCONT)
        sc.stop(timeout=15)
        a.stop()
        b.stop()
    base = statistics.median(before)
    after = [(t0, d, up, st) for t0, d, up, st in samples if t0 + d >= died]
    slowed = [d for t0, d, _, _ in after if d > base * 3 + 0.005]
    open_at = opened.get("a#0")
    return {
        "mode": mode,
        "baseline_p50_ms": round(base * 1000, 2),
        "time_to_breaker_open_ms": None if open_at is None else round((open_at - died) * 1000, 1),
        "requests_after_death": len(after),
        "requests_slowed": len(slowed),
        "max_latency_ms": round(max(d for _, d, _, _ in after) * 1000, 1),
        "failed_requests": sum(1 for *_, st in after if st != 200),
        "served_by_dead_target_after_open": sum(1 for t0, _, up, _ in after if open_at and t0 > open_at and up.startswith("a")),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = []
    with tempfile.TemporaryDirectory(prefix="sidecar-failover-") as tmp:
        for mode in ("refused", "hung"):
            out.append(asyncio.run(run_mode(mode, Path(tmp) / mode)))
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    for r in out:
        print(
            f"{r['mode']:<8} breaker open {r['time_to_breaker_open_ms']} ms after death; "
            f"{r['requests_slowed']} of {r['requests_after_death']} requests slowed (max {r['max_latency_ms']} ms, "
            f"baseline p50 {r['baseline_p50_ms']} ms); failed {r['failed_requests']}; "
            f"served by the dead target after open: {r['served_by_dead_target_after_open']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
