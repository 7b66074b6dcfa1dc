"""How fast the response cache answers, and what the semantic tier costs in memory.

1. Exact hits end to end: a `claude-sidecar start --foreground` daemon (temp home, cache
   on) in front of a fake Anthropic upstream on loopback; after one miss the same request
   is sent again and again and timed at the client, for a 2 KB WebFetch-summary body and a
   76 KB main-turn body captured from Claude Code, streaming and not. The miss (the fake
   upstream answering at once) is shown for comparison.
2. Semantic lookups in this process, as the stage runs them: embedding in the embedder's
   worker thread (1 torch thread, as the daemon uses), search of the bucket's matrix, and
   the guards, for a typical 20-word prompt and a 150-word one.
3. Memory: the daemon's resident set before and after its embedding model loaded.

    python bench/cache_latency.py               # about a minute
    python bench/cache_latency.py --hits 2000 --json

All traffic stays on 127.0.0.1; the daemon started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sidecar.cache.config import CacheConfig  # noqa: E402
from sidecar.cache.embedder import Embedder  # noqa: E402
from sidecar.cache.semantic import SemanticIndex, decide  # noqa: E402
from sidecar.testing.captures import load  # noqa: E402
from sidecar.testing.fake_anthropic import FakeAnthropic, Text  # noqa: E402
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child  # noqa: E402

BODIES = {"2k": "webfetch-summary", "76k": "main-turn-opus"}
PROMPT_20 = "Can you explain what the function parse_date in src/utils/dates.py does and where it is called from?"
PROMPT_150 = " ".join(
    ["Refactor the request handler in server/handlers.py so that validation, authorisation and the database"
     " call are three separate functions, keep the public signature, add type hints,"] * 6
)  # fmt: skip


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of `xs`, nearest rank."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(xs: list[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean in milliseconds."""
    return {
        "p50_ms": round(pct(xs, 0.5), 3),
        "p90_ms": round(pct(xs, 0.9), 3),
        "p99_ms": round(pct(xs, 0.99), 3),
        "mean_ms": round(statistics.fmean(xs), 3),
        "n": len(xs),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    """A process's resident memory (or its peak with VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


async def timed_post(s: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    async with s.post(url, data=body, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
        return (time.perf_counter() - t0) * 1000, resp.headers.get("x-sidecar-cache", "")


async def exact_hits(sc: ChildSidecar, hits: int) -> dict[str, Any]:
    """Client-side latency of exact hits (and of the first miss) per body and mode."""
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        for size, name in BODIES.items():
            cap = load(name)
            headers = {k: v for k, v in cap.headers if k.lower() not in ("host", "content-length", "accept-encoding")}
            # The first (non-streaming) request is the miss; one entry then serves both modes.
            miss_ms, outcome = await timed_post(s, sc.url + "/v1/messages", cap.body, headers)
            assert outcome == "miss", outcome
            for stream in (False, True):
                body = json.dumps(dict(cap.data["body"], stream=stream)).encode()
                times = []
                cpu0 = cpu_seconds(sc.proc.pid)
                for _ in range(hits):
                    ms, outcome = await timed_post(s, sc.url + "/v1/messages", body, headers)
                    assert outcome == "hit-exact", outcome
                    times.append(ms)
                cpu_ms = (cpu_seconds(sc.proc.pid) - cpu0) * 1000 / hits
                out[f"{size}_{'stream' if stream else 'json'}"] = {
                    "miss_ms": round(miss_ms, 3), "hit": summary(times), "daemon_cpu_ms_per_hit": round(cpu_ms, 3),
                }  # fmt: skip
    return out


async def semantic_lookups(n: int) -> dict[str, Any]:
    """Embedding + search + guards, as the stage runs them, for two prompt lengths."""
    cfg = CacheConfig()
    emb = Embedder()
    t0 = time.perf_counter()
    assert await emb.ready(), emb.error
    load_s = time.perf_counter() - t0
    index = SemanticIndex()
    rng = np.random.default_rng(7)
    for i in range(50):  # a busy conversation prefix: 50 stored prompts in one bucket
        v = rng.standard_normal(384).astype(np.float32)
        index.add("bucket", f"k{i}", f"stored prompt {i}", v / np.linalg.norm(v))
    out: dict[str, Any] = {"model_load_s": round(load_s, 2)}
    for name, text in (("20_words", PROMPT_20), ("150_words", PROMPT_150)):
        times, skipped = [], 0
        for _ in range(n):
            t = time.perf_counter()
            e, _ = await emb.lookup(text, 10.0)
            if e.vector is None:
                skipped += 1
                continue
            for c in index.search("bucket", e.vector):
                decide(text, c.query, c.similarity, cfg.threshold, cfg.min_words)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = {**summary(times), "skipped": skipped, "over_default_deadline": sum(x > cfg.embed_timeout_ms for x in times)}
    emb.close()
    return out


async def daemon_memory(fake: FakeAnthropic, home: Path) -> dict[str, float]:
    """RSS of a semantic-mode daemon at start and after its model loaded and served."""
    cfg = anthropic_config(fake.url, '[cache]\nmode = "semantic"\nreask_window_seconds = 0\nembed_timeout_ms = 30000\n')
    sc = await asyncio.to_thread(start_child, home, cfg)
    try:
        pid = sc.proc.pid
        before = rss_mb(pid)
        body = json.dumps({"model": "claude-opus-4-8", "max_tokens": 64, "messages": [{"role": "user", "content": PROMPT_20}]}).encode()
        headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "content-type": "application/json"}
        async with aiohttp.ClientSession() as s:
            await timed_post(s, sc.url + "/v1/messages", body, headers)
            auth = {"Authorization": f"Bearer {sc.token}"}
            deadline = time.monotonic() + 300
            while True:
                async with s.get(sc.url + "/sidecar/v1/cache", headers=auth) as r:
                    st = await r.json()
                if st["indexed"] >= 1:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the model did not load: {st}")
                await asyncio.sleep(0.1)
            for i in range(20):  # some lookups, so the peak includes inference
                await timed_post(s, sc.url + "/v1/messages", body.replace(b"does", f"did {i}".encode()), headers)
        return {"rss_start_mb": round(before, 1), "rss_loaded_mb": round(rss_mb(pid), 1), "rss_peak_mb": round(rss_mb(pid, "VmHWM"), 1)}
    finally:
        sc.stop()


async def run(hits: int, lookups: int) -> dict[str, Any]:
    results: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0]}
    async with FakeAnthropic(default=Text.bench(50)) as fake:
        with tempfile.TemporaryDirectory(prefix="cache-bench-") as tmp:
            home = Path(tmp)
            cfg = anthropic_config(fake.url, "[cache]\nreask_window_seconds = 0\n")
            sc = await asyncio.to_thread(start_child, home / "exact", cfg)
            try:
                results["exact_hit"] = await exact_hits(sc, hits)
            finally:
                sc.stop()
            results["semantic_lookup"] = await semantic_lookups(lookups)
            results["daemon_memory"] = await daemon_memory(fake, home / "semantic")
    return results


def show(r: dict[str, Any]) -> None:
    print(f"(machine load average at start: {r['load_average_at_start']:.1f} on {os.cpu_count()} cores)")
    print("exact hits, client-side, through the daemon (ms):")
    for k, v in r["exact_hit"].items():
        h = v["hit"]
        print(
            f"  {k:<12} p50 {h['p50_ms']:7.3f}  p90 {h['p90_ms']:7.3f}  p99 {h['p99_ms']:7.3f}   "
            f"daemon CPU {v['daemon_cpu_ms_per_hit']:.3f} ms/hit   (first miss {v['miss_ms']:.1f})"
        )
    s = r["semantic_lookup"]
    print(f"semantic lookup (embedding + search of 50 + guards), model load {s['model_load_s']} s (ms):")
    for k in ("20_words", "150_words"):
        v = s[k]
        print(f"  {k:<12} p50 {v['p50_ms']:7.2f}  p90 {v['p90_ms']:7.2f}  p99 {v['p99_ms']:7.2f}   over the default deadline: {v['over_default_deadline']}/{v['n']}")
    m = r["daemon_memory"]
    print(f"daemon memory: {m['rss_start_mb']} MB at start, {m['rss_loaded_mb']} MB with the model loaded, peak {m['rss_peak_mb']} MB")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hits", type=int, default=500, help="exact hits per body and mode")
    parser.add_argument("--lookups", type=int, default=200, help="semantic lookups per prompt length")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.hits, args.lookups))
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        show(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
