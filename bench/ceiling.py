"""How far c=8 JSON throughput could go on this machine: the floor, one sidecar, and two
sidecars that share nothing (own homes, own ledgers; the 8 connections split 4 + 4), in
rotated blocks of the same run, with where the machine's cores went in each.

Two independent daemons are the best case for any multi-process sidecar: no shared
budget, audit chain or cache to coordinate. If they cannot reach a throughput, no worker
model of the same per-request work can. Processes and workload as bench/overhead.py.

    python bench/ceiling.py                 # 76 KB body, 3 rounds of 8 s per target
    python bench/ceiling.py --body 2k --seconds 5 --rounds 2

All traffic stays on 127.0.0.1; every process started here is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.overhead import (
    FAKE,
    WORDS,
    Child,
    Sidecar,
    Target,
    Workload,
    cpu_seconds,
    load_workload,
    machine_cpu,
    self_cpu_seconds,
)

CONCURRENCY = 8
WARM_UP = 300  # requests per process before the first round


@dataclass
class Setup:
    """One way to serve the load: one or more processes, the connections spread over them."""

    name: str
    endpoints: list[tuple[str, int]]  # (url, pid)
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)  # CPU ms per request, its processes together
    cores: list[dict[str, float]] = field(default_factory=list)


async def run_block(setup: Setup, wl: Workload, seconds: float, fake_pid: int) -> None:
    """c=8 JSON requests for `seconds`; records the rate and where the cores went."""
    targets = [Target(setup.name, url, pid, wl) for url, pid in setup.endpoints]
    pids = [pid for _, pid in setup.endpoints]
    n = 0
    cpu0, fake0, self0, (busy0, irq0, steal0) = sum(map(cpu_seconds, pids)), cpu_seconds(fake_pid), self_cpu_seconds(), machine_cpu()
    t0 = time.perf_counter()
    end = t0 + seconds

    async def worker(t: Target) -> None:
        nonlocal n
        while time.perf_counter() < end:
            await t.json()
            n += 1

    await asyncio.gather(*(worker(targets[i % len(targets)]) for i in range(CONCURRENCY)))
    wall = time.perf_counter() - t0
    busy1, irq1, steal1 = machine_cpu()
    proxy = sum(map(cpu_seconds, pids)) - cpu0
    setup.rates.append(n / wall)
    setup.cpu_ms.append(proxy / n * 1000)
    used = (busy1 - busy0 + irq1 - irq0 + steal1 - steal0) / wall
    cores = {"proxy": proxy / wall, "fake": (cpu_seconds(fake_pid) - fake0) / wall, "load generator": (self_cpu_seconds() - self0) / wall}
    cores["other"] = max(0.0, used - sum(cores.values()))  # the kernel's softirq work, and anything else running
    cores["idle"] = (os.cpu_count() or 1) - used
    setup.cores.append(cores)
    for t in targets:
        await t.close()


async def measure(setups: list[Setup], wl: Workload, seconds: float, rounds: int, fake_pid: int) -> None:
    for s in setups:
        for url, pid in s.endpoints:
            t = Target(s.name, url, pid, wl)
            for _ in range(WARM_UP):
                await t.json()
            await t.close()
    for r in range(rounds):
        order = setups if r % 2 == 0 else setups[::-1]  # drift lands on every setup
        for s in order:
            await run_block(s, wl, seconds, fake_pid)


def report(setups: list[Setup]) -> None:
    floor = setups[0]
    print(f"c={CONCURRENCY} JSON, median of {len(floor.rates)} blocks (ratio to the floor's blocks of the same round)")
    for s in setups:
        ratios = [a / b for a, b in zip(s.rates, floor.rates, strict=True)]
        cores = {k: statistics.median(c[k] for c in s.cores) for k in s.cores[0]}
        spread = ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
        print(
            f"  {s.name:<22} {statistics.median(s.rates):>6,.0f} req/s  {min(ratios):.2f}-{max(ratios):.2f}x  "
            f"CPU {statistics.median(s.cpu_ms):.3f} ms/req  cores: {spread}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--body", choices=("2k", "76k", "116k"), default="76k")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each block")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    wl = load_workload(a.body, None)
    fake = Child([sys.executable, str(FAKE), "--port", "0", "--words", str(WORDS)], "fake")
    procs: list[Child | Sidecar] = [fake]
    homes = [Path(tempfile.mkdtemp(prefix=f"sidecar-ceiling-{n}-")) for n in "ab"]
    try:
        floor = Child([sys.executable, str(Path(__file__).with_name("overhead.py")), "--serve-floor", fake.url], "floor")
        procs.append(floor)
        one = Sidecar(homes[0] / "home", fake.url)
        procs.append(one)
        two = Sidecar(homes[1] / "home", fake.url)
        procs.append(two)
        setups = [
            Setup("floor", [(floor.url, floor.pid)]),
            Setup("sidecar", [(one.url, one.pid)]),
            Setup("two sidecars (4 + 4)", [(one.url, one.pid), (two.url, two.pid)]),
        ]
        print(f"{wl.name} ({len(wl.json_body):,} B), {os.cpu_count()} CPUs, {a.rounds} rounds of {a.seconds:g} s per setup")
        asyncio.run(measure(setups, wl, a.seconds, a.rounds, fake.pid))
        report(setups)
    finally:
        for proc in reversed(procs):
            proc.stop()
        for home in homes:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
