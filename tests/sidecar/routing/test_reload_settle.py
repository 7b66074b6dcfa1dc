"""A config file another process is still writing is never applied half-way.

An editor or a sync tool that writes the file in place truncates it and then writes it, so
for a moment the file is cut short; a cut file is often valid TOML without the sections
after the cut. Applied, that lifts a [budget] (or drops routes) until the next look at the
file. The watcher reads a changed file only once it has held still.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from sidecar.policy.model import Policy
from sidecar.proxy import reload
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config
from sidecar.testing.live import PRICES, live_sidecar

# Rewrites the file in place REWRITES times: truncate, write the part before [budget], pause
# (a slow writer, a sync tool's next block), write the rest.
WRITER = """
import sys, time
path, cut, rewrites, pause = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
data = open(path, "rb").read()
for _ in range(rewrites):
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data[:cut])
        f.flush()
        time.sleep(pause)
        f.write(data[cut:])
    time.sleep(pause)
"""


async def test_a_file_written_in_place_is_applied_whole_never_cut(
    fake: FakeAnthropic, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reload, "WATCH_INTERVAL", 0.02)  # look often: every cut is seen
    monkeypatch.setattr(reload, "SETTLE_SECONDS", 0.4)  # four times the writer's pause
    head = anthropic_config(fake.url, PRICES)
    text = head + "[budget]\ndaily_usd = 5.0\n"
    async with live_sidecar(hermetic_env, text) as sc:
        assert sc.reloader.apply_policy is not None
        applied: list[Policy] = []
        apply = sc.reloader.apply_policy

        def record(policy: Policy) -> None:
            applied.append(policy)
            apply(policy)

        sc.reloader.apply_policy = record
        reloads = sc.reloader.reloads
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(sc.file), str(len(head.encode())), "12", "0.1")
        try:
            assert await asyncio.wait_for(writer.wait(), 60) == 0
        finally:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
        for _ in range(100):  # the whole file, once it holds still
            if sc.reloader.reloads > reloads:
                break
            await asyncio.sleep(0.05)
        assert sc.reloader.reloads > reloads, "the finished file was never applied"
        assert sc.file.read_text() == text
        lifted = [p for p in applied if not p.rules.budget.daily_usd]
        assert not lifted, f"{len(lifted)} of {len(applied)} applied policies had the budget cut off"
        assert sc.reloader.policy is not None and sc.reloader.policy.rules.budget.daily_usd == 5.0

