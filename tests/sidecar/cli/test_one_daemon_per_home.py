"""Two daemons started at the same instant on one data dir: one serves, the other is refused
before it opens anything (they would both replay the journal and fork the audit chain)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config


def _spawn(home: Path, cfg_file: Path, n: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(cfg_file), "CLAUDE_SIDECAR_PORT": "0"}
    with open(home / f"child{n}.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "sidecar", "start", "--foreground"], env=env, stdout=log, stderr=log)


async def _until(done: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if done() or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


async def test_a_second_daemon_on_the_same_data_dir_is_refused(hermetic_env: Path, fake: FakeAnthropic) -> None:
    home = hermetic_env
    home.mkdir(parents=True, exist_ok=True)
    cfg_file = home / "config.toml"
    cfg_file.write_text(anthropic_config(fake.url))
    procs = [_spawn(home, cfg_file, n) for n in (1, 2)]
    try:
        await _until(lambda: any(p.poll() is not None for p in procs), 30)
        exited = [p for p in procs if p.poll() is not None]
        assert len(exited) == 1, "exactly one of two daemons on one data dir must give up"
        loser = exited[0]
        winner = next(p for p in procs if p is not loser)
        assert loser.returncode != 0
        n = procs.index(loser) + 1
        message = (home / f"child{n}.log").read_text()
        # Refused either by the data-dir lock or, when the winner already wrote its state file,
        # by the "already running" check before it: both name the winner.
        assert ("another claude-sidecar" in message or "already running" in message) and f"pid {winner.pid}" in message, message
        # The winner is the one serving: it wrote the state file.
        state_file = home / "state" / "sidecar.json"
        await _until(state_file.exists, 20)
        assert json.loads(state_file.read_text())["pid"] == winner.pid
        assert winner.poll() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)
