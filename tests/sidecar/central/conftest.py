"""Central-server fixtures: every test runs on SQLite and on a real, throwaway PostgreSQL 15.

The PostgreSQL cluster is started once per session in a temporary directory, as the
unprivileged user `nobody` when the tests run as root (PostgreSQL refuses to run as root),
with fsync off; each test gets its own fresh database in it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing import postgres
from sidecar.testing.central import Central, start_central
from sidecar.testing.postgres import PgCluster


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
