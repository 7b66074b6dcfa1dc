"""The central server as a child process (`claude-sidecar central serve`), for tests and benches."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from types import TracebackType

_ROOT = str(Path(__file__).resolve().parents[2])


class CentralProcess:
    """`async with CentralProcess(db_url) as c:` -> c.url, c.bootstrap_token (first run only)."""

    def __init__(self, db_url: str, *extra: str, startup_timeout: float = 30.0) -> None:
        self.db_url, self.extra, self.startup_timeout = db_url, extra, startup_timeout
        self.url = ""
        self.bootstrap_token: str | None = None
        self.returncode: int | None = None  # after stop(): 0 for a clean exit, -9 when it had to be killed
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> CentralProcess:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))}
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar", "central", "serve", "--db", self.db_url, "--port", "0", *self.extra,
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self._proc.stdout is not None
        try:
            async with asyncio.timeout(self.startup_timeout):
                while True:
                    line = (await self._proc.stdout.readline()).decode()
                    if not line:
                        raise RuntimeError("the central server exited before it listened")
                    if m := re.search(r"token \(shown once, keep it safe\): (\S+)", line):
                        self.bootstrap_token = m.group(1)
                    if m := re.search(r"listening on (\S+)", line):
                        self.url = m.group(1)
                        return self
        except BaseException:
            await self.stop()
            raise

    async def stop(self, kill_after: float = 15.0) -> None:
        """SIGTERM the server (by pid) and wait for it; SIGKILL after `kill_after` seconds."""
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), kill_after)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        if self._proc is not None:
            self.returncode = self._proc.returncode
        self._proc = None

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()
