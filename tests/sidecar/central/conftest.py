"""Central-server fixtures: every test runs on SQLite and on a real, throwaway PostgreSQL 15.

The PostgreSQL cluster is started once per session in a temporary directory, as the
unprivileged user `nobody` when the tests run as root (PostgreSQL refuses to run as root),
with fsync off; each test gets its own fresh database in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from sidecar.central.app import create_app
from sidecar.central.serving import Options
from sidecar.central.store import Store, open_store
from sidecar.testing import postgres
from sidecar.testing.postgres import PgCluster

TEST_OPTIONS = Options(max_wait=5.0, enroll_per_minute=10_000, auth_failures_per_minute=100_000)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL 15 for the session (scripts/test installs it when missing)."""
    if not postgres.available():
        pytest.fail(f"PostgreSQL 15 is not installed ({postgres.PG_BIN}/initdb missing): run ./scripts/test, which installs it")
    with PgCluster() as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database the test runs on."""
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database of the test's backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'central.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return await cluster.new_database()


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


@pytest.fixture
async def central(db_url: str) -> AsyncIterator[Central]:
    """A central server on the test's backend."""
    runner, store, url = await start_central(db_url)
    token = await store.bootstrap_admin()
    assert token
    async with aiohttp.ClientSession() as http:
        yield Central(url, store, token, http)
    await runner.cleanup()
    await store.db.close()
    await asyncio.sleep(0)
