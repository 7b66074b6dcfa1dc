"""The central server for tests and benches: as a child process (`claude-sidecar central serve`),
or served in the caller's loop with a client for its API (`start_central`, `Central`)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from sidecar.central.app import create_app
from sidecar.central.serving import Options
from sidecar.central.store import Store, open_store

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


TEST_OPTIONS = Options(max_wait=5.0, enroll_per_minute=10_000, auth_failures_per_minute=100_000)


@dataclass
class Central:
    """A running central server in the test's loop, with a bootstrap admin token."""

    url: str
    store: Store
    admin_token: str
    http: aiohttp.ClientSession

    async def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any]:
        """Call the API; (status, JSON body or None)."""
        headers = dict(kw.pop("headers", {}))
        if token:
            headers["authorization"] = f"Bearer {token}"
        async with self.http.request(method, self.url + path, headers=headers, **kw) as r:
            body = await r.read()
            try:
                return r.status, (await r.json(content_type=None)) if body else None
            except ValueError:
                return r.status, body

    async def admin(self, method: str, path: str, **kw: Any) -> Any:
        """An admin call that must succeed."""
        status, body = await self.call(method, path, self.admin_token, **kw)
        assert status < 300, (status, body)
        return body

    async def enroll_device(self, email: str, team: str | None = None) -> dict[str, Any]:
        """Create the developer (and team) if new, enroll a device, return the enroll answer."""
        if team:
            await self.call("POST", "/v1/admin/teams", self.admin_token, json={"name": team})
        await self.call("POST", "/v1/admin/developers", self.admin_token, json={"email": email, "team": team})
        enr = await self.admin("POST", "/v1/admin/enrollment-tokens", json={"developer": email})
        status, body = await self.call("POST", "/v1/enroll", json={"token": enr["token"], "name": "laptop"})
        assert status == 201, body
        return dict(body)


async def start_central(url: str, options: Options = TEST_OPTIONS) -> tuple[web.AppRunner, Store, str]:
    """Open the store, serve it on a free loopback port; (runner, store, base URL)."""
    store = await open_store(url)
    runner = web.AppRunner(create_app(store, options), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, store, f"http://127.0.0.1:{port}"
