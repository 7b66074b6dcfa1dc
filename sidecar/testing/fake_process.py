"""The fake Anthropic upstream in a child process, driven over its /__fake/ HTTP API."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from sidecar.testing.fake_behaviours import Behaviour, RecordedRequest, behaviour_to_json

# The directory that holds the `sidecar` package, for the child's PYTHONPATH.
_ROOT = str(Path(__file__).resolve().parents[2])


# ---------------------------------------------------------------- separate process


class FakeAnthropicProcess:
    """Runs the fake as a child process and drives it over its /__fake/* control endpoints."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, startup_timeout: float = 10.0):
        self.host, self.port, self.startup_timeout = host, port, startup_timeout
        self.url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> FakeAnthropicProcess:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")])),
        }
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sidecar.testing.fake_anthropic",
            "--host", self.host, "--port", str(self.port),
            stdout=asyncio.subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), self.startup_timeout)
        except BaseException:
            await self._stop()
            raise
        if not line.startswith(b"listening on "):
            await self._stop()
            raise RuntimeError(f"fake upstream did not start: {line!r}")
        self.url = line.decode().strip().removeprefix("listening on ")
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
        await self._stop()

    async def _stop(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        assert self._session is not None, "use FakeAnthropicProcess as an async context manager"
        async with self._session.request(method, self.url + path, json=body) as resp:
            resp.raise_for_status()
            return await resp.json()

    async def script(self, *behaviours: Behaviour) -> None:
        """Replace the child's queue of behaviours."""
        await self._call("POST", "/__fake/script", [behaviour_to_json(b) for b in behaviours])

    async def set_default(self, behaviour: Behaviour) -> None:
        """Set the reply the child uses when its queue is empty."""
        await self._call("POST", "/__fake/default", behaviour_to_json(behaviour))

    async def reset(self) -> None:
        """Clear the child's queue and recorded requests."""
        await self._call("POST", "/__fake/reset")

    async def requests(self) -> list[RecordedRequest]:
        """The requests the child has recorded."""
        return [RecordedRequest.from_json(r) for r in await self._call("GET", "/__fake/requests")]
