"""Real MCP servers from npm (installed by scripts/test under .cache/npm-mcp) and a small
Python one, behind a sidecar served in the test's loop."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from sidecar.appkeys import STAGES
from sidecar.audit.stage import AuditStage
from sidecar.ledger.store import open_db
from sidecar.testing.harness import InProcessSidecar
from sidecar.testing.requirements import require_files

ROOT = Path(__file__).resolve().parents[3]
NPM = ROOT / ".cache" / "npm-mcp" / "node_modules" / "@modelcontextprotocol"
EVERYTHING = NPM / "server-everything" / "dist" / "index.js"
FILESYSTEM = NPM / "server-filesystem" / "dist" / "index.js"
TOY = Path(__file__).with_name("toy_server.py")


@pytest.fixture
def npm_servers() -> None:
    """Fail when ./scripts/test has not installed the npm MCP servers."""
    require_files(EVERYTHING.exists() and FILESYSTEM.exists(), "the npm MCP servers (./scripts/test installs them in .cache/npm-mcp)")


def stdio_server(name: str, script: Path, *args: str, extra: str = "") -> str:
    """A [[mcp.servers]] table for a node or python stdio server."""
    command = "node" if script.suffix == ".js" else sys.executable
    return f"[[mcp.servers]]\nname = {json.dumps(name)}\ncommand = {json.dumps(command)}\nargs = {json.dumps([str(script), *args])}\n{extra}\n"


@contextlib.asynccontextmanager
async def mcp_client(sidecar: InProcessSidecar, token: str | None = None) -> AsyncIterator[ClientSession]:
    """The MCP SDK's client, connected to the sidecar's /mcp with the local token."""
    headers = {"x-sidecar-token": sidecar.token if token is None else token}
    async with httpx.AsyncClient(headers=headers, timeout=60, trust_env=False) as http:
        async with streamable_http_client(f"{sidecar.url}/mcp", http_client=http) as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session


async def audit_calls(sidecar: InProcessSidecar) -> list[dict[str, Any]]:
    """The mcp_call entries written to the audit log."""
    stage = next(s for s in sidecar.app[STAGES] if isinstance(s, AuditStage))
    await stage.audit.flush()
    db = open_db(sidecar.paths.db_file)
    try:
        rows = db.execute("SELECT data FROM audit WHERE kind = 'mcp_call' ORDER BY seq").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]
