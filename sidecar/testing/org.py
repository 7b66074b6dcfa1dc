"""An org on loopback for tests and benches: one central server and N enrolled sidecars,
every one a real child process.

    async with Org(db_url, tmp_path, upstream_url) as org:
        a = await org.add_sidecar("ada@example.com", team="core")
        await org.push("org", {"policy": {"deny_models": ["claude-opus-*"]}})
        ...
        await org.stop_central(); await org.start_central()  # same port, same database

Enrollment runs the real `claude-sidecar enroll` command against the running server, so
the device credential and pinned key are stored exactly as a developer's would be.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from aiohttp import web

from sidecar import paths as paths_mod
from sidecar.testing.central import CentralProcess
from sidecar.testing.fake_server import serve_on_loopback
from sidecar.testing.harness import ChildSidecar, anthropic_config, start_child, terminate
from sidecar.testing.postgres import free_port

_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass
class Member:
    """One enrolled sidecar: its process, home and developer."""

    name: str
    email: str
    home: Path
    config_text: str
    child: ChildSidecar | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The sidecar's base URL."""
        assert self.child is not None, f"{self.name} is not running"
        return self.child.url

    @property
    def db_file(self) -> Path:
        """Its usage store."""
        return paths_mod.resolve({"CLAUDE_SIDECAR_HOME": str(self.home)}).db_file

    def ledger(self) -> dict[str, Any]:
        """Its ledger's totals: requests, token sums and the exact sum of costs."""
        db = sqlite3.connect(f"file:{self.db_file}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT id, input_tokens, output_tokens, cost_usd FROM usage").fetchall()
        finally:
            db.close()
        return {
            "ids": {r[0] for r in rows},
            "requests": len(rows),
            "input_tokens": sum(r[1] or 0 for r in rows),
            "output_tokens": sum(r[2] or 0 for r in rows),
            "cost_usd": math.fsum(r[3] or 0.0 for r in rows),
            "costs": {r[0]: float(r[3] or 0.0) for r in rows},
        }


class Org:
    """One central server (a child process) and the sidecars enrolled with it."""

    def __init__(self, db_url: str, root: Path, upstream_url: str, *, central_args: tuple[str, ...] = ()) -> None:
        self.db_url, self.root, self.upstream_url = db_url, root, upstream_url
        self.central_args = ("--max-wait", "30", "--enroll-per-minute", "1000", "--auth-failures-per-minute", "100000", *central_args)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.central: CentralProcess | None = None
        self.admin_token = ""
        self.members: list[Member] = []
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Org:
        self.http = aiohttp.ClientSession()
        await self.start_central()
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        for m in self.members:
            if m.child is not None:
                await asyncio.to_thread(_stop, m.child)
        await self.stop_central()
        if self.http is not None:
            await self.http.close()

    async def start_central(self) -> None:
        """Start (or restart) the server on the same port and database."""
        self.central = CentralProcess(self.db_url, "--port", str(self.port), *self.central_args)
        await self.central.__aenter__()
        if self.central.bootstrap_token:
            self.admin_token = self.central.bootstrap_token

    async def stop_central(self) -> None:
        """Stop the server (SIGTERM)."""
        if self.central is not None:
            await self.central.stop()
            self.central = None

    async def admin(self, method: str, path: str, body: Any = None, **query: str) -> Any:
        """An admin call that must succeed; its JSON answer."""
        assert self.http is not None
        async with self.http.request(
            method, self.url + path, json=body, params=query or None, headers={"authorization": f"Bearer {self.admin_token}"}
        ) as r:
            data = await r.json(content_type=None)
            assert r.status < 300, (method, path, r.status, data)
            return data

    async def push(self, scope: str, document: dict[str, Any] | None, comment: str = "test") -> int:
        """Push a scope's policy document; the new version."""
        return int((await self.admin("POST", "/v1/admin/policy", {"scope": scope, "document": document, "comment": comment}))["version"])

    async def add_sidecar(self, email: str, *, team: str | None = None, extra: str = "", via: str | None = None) -> Member:
        """Create the developer, enroll a new sidecar for them (through `via`, e.g. a proxy
        in the middle, when given) and start it."""
        if team:
            teams = {t["name"] for t in (await self.admin("GET", "/v1/admin/teams"))["teams"]}
            if team not in teams:
                await self.admin("POST", "/v1/admin/teams", {"name": team})
        developers = {d["email"] for d in (await self.admin("GET", "/v1/admin/developers"))["developers"]}
        if email not in developers:
            await self.admin("POST", "/v1/admin/developers", {"email": email, "team": team})
        token = (await self.admin("POST", "/v1/admin/enrollment-tokens", {"developer": email}))["token"]
        name = f"s{len(self.members) + 1}"
        home = self.root / name
        home.mkdir(parents=True)
        m = Member(name, email, home, anthropic_config(self.upstream_url, extra))
        m.env = _env(home)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "sidecar", "enroll", via or self.url, "--token", token, "--name", name],
            env=m.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr + done.stdout
        self.members.append(m)
        await self.start(m)
        return m

    async def start(self, m: Member) -> None:
        """Start (or restart) a member's daemon."""
        m.child = await asyncio.to_thread(start_child, m.home, m.config_text, m.env)

    async def stop(self, m: Member, *, kill: bool = False) -> None:
        """Stop a member: SIGTERM, or SIGKILL with `kill`."""
        if m.child is None:
            return
        if kill:
            m.child.proc.kill()
            await asyncio.to_thread(m.child.proc.wait, 30)
        else:
            await asyncio.to_thread(_stop, m.child)
        m.child = None

    async def status(self, m: Member) -> dict[str, Any]:
        """The member's control-API status."""
        assert self.http is not None and m.child is not None
        async with self.http.get(m.url + "/sidecar/v1/status", headers={"x-sidecar-token": m.child.token}) as r:
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def message(self, m: Member, model: str, text: str = "hi") -> tuple[int, dict[str, Any]]:
        """One non-streaming Messages call through member `m`: (status, JSON body)."""
        assert self.http is not None and m.child is not None
        body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
        headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "x-sidecar-token": m.child.token}
        async with self.http.post(m.url + "/v1/messages", json=body, headers=headers) as r:
            return r.status, dict(await r.json(content_type=None))

    async def server_usage(self) -> dict[str, Any]:
        """The server's usage: ids per device and exact totals, read from the admin API's reports."""
        rows = (await self.admin("GET", "/v1/admin/usage", by="developer"))["rows"]
        return {
            "requests": sum(int(r["requests"]) for r in rows),
            "input_tokens": sum(int(r["input_tokens"] or 0) for r in rows),
            "output_tokens": sum(int(r["output_tokens"] or 0) for r in rows),
            "cost_usd": math.fsum(float(r["cost_usd"] or 0) for r in rows),
            "by_developer": {r["key"]: int(r["requests"]) for r in rows},
        }


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "CLAUDE_SIDECAR_HOME": str(home), "CLAUDE_SIDECAR_CONFIG": str(home / "config.toml")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))
    return env


def _stop(child: ChildSidecar) -> None:
    terminate(child.proc, 30)


def dumps(data: Any) -> str:
    """Compact JSON (for assertion messages)."""
    return json.dumps(data, sort_keys=True, default=str)[:2000]


class PolicyTamperer:
    """A proxy in the middle between sidecars and the central server: forwards every call,
    and while `tamper` is set, passes each signed policy it relays through it first."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.tamper: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.tampered = 0
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PolicyTamperer:
        self._http = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner, self.url = await serve_on_loopback(app)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length", "transfer-encoding")}
        try:
            async with self._http.request(
                request.method, self.target + request.path_qs, data=await request.read(), headers=headers,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as r:
                body = await r.read()
                status, rh = r.status, {k: v for k, v in r.headers.items() if k.lower() in ("content-type", "etag", "retry-after")}
        except aiohttp.ClientError:
            return web.Response(status=502, text="the central server is down")
        if self.tamper is not None and request.path == "/v1/policy" and status == 200:
            body = json.dumps(self.tamper(json.loads(body))).encode()
            self.tampered += 1
        return web.Response(status=status, body=body, headers=rh)


def flip_policy(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its payload changed after signing: every deny list emptied."""
    payload = json.loads(envelope["payload"])
    policy = payload.get("policy") or {}
    policy.setdefault("policy", {})["deny_models"] = []
    payload["policy"] = policy
    return {**envelope, "payload": json.dumps(payload, sort_keys=True, separators=(",", ":"))}
