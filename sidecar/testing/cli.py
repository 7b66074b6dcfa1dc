"""Running the `claude-sidecar` command line from tests, as a user does: a process of its own."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

from sidecar.cli.common import pid_alive
from sidecar.paths import Paths

COMMAND_SECONDS = 60  # a command that takes longer has hung


class Run(NamedTuple):
    """What one command did: its exit code and what it printed."""

    rc: int | None
    out: str
    err: str


async def cli(*args: str, env: dict[str, str] | None = None, home: Path | None = None) -> Run:
    """Run `python -m sidecar ARGS` as a separate process (with `home`: that CLAUDE_SIDECAR_HOME
    and its config.toml; `env` is added to this process's environment)."""
    full = {**os.environ, **(env or {})}
    if home is not None:
        full |= {"CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=full,
    )  # fmt: skip
    async with asyncio.timeout(COMMAND_SECONDS):
        out, err = await proc.communicate()
    return Run(proc.returncode, out.decode(), err.decode())


def write_config(p: Paths, text: str) -> None:
    """Write `text` as the config file of `p`."""
    p.config_file.parent.mkdir(parents=True, exist_ok=True)
    p.config_file.write_text(text)


def wait_gone(pid: int, timeout: float = 10) -> bool:
    """True once process `pid` has exited (waiting up to `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return not pid_alive(pid)
