"""The commands an org admin and a developer type: from an empty database to an enrolled sidecar."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from click.testing import CliRunner

from sidecar.central import enrollment
from sidecar.cli import cli
from sidecar.paths import resolve
from sidecar.testing.central import Central, CentralProcess


def _run(*args: str, ok: bool = True) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert (result.exit_code == 0) == ok, (args, result.exit_code, result.output)
    return result.output


async def test_from_empty_database_to_enrolled_sidecar(db_url: str, tmp_path: Path) -> None:
    async with CentralProcess(db_url) as server:
        assert server.bootstrap_token and server.bootstrap_token.startswith("csa_")
        _run("admin", "login", server.url, "--token", server.bootstrap_token)
        _run("admin", "teams", "create", "core")
        _run("admin", "developers", "create", "ada@example.com", "--team", "core")
        token = json.loads(_run("admin", "tokens", "create", "ada@example.com", "--ttl", "1h", "--json"))["token"]
        out = _run("enroll", server.url, "--token", token, "--name", "ada-laptop")
        assert "enrolled with" in out and "pinned signing key" in out
        p = resolve()
        record = enrollment.load(p)
        assert record is not None and record.url == server.url
        cred = enrollment.secret_store(p).get(enrollment.CREDENTIAL_NAME)
        assert cred and cred.startswith("csd_")
        assert oct(os.stat(enrollment.enrollment_file(p)).st_mode & 0o777) == "0o600"
        assert json.loads(_run("admin", "tokens", "list", "--json"))["tokens"] == []  # used up
        # the token was single-use, and a second enrollment needs --force
        assert "already enrolled" in _run("enroll", server.url, "--token", token, ok=False)

        doc = tmp_path / "org.json"
        doc.write_text(json.dumps({"budget": {"daily_usd": 10}}))
        assert "version 1" in _run("admin", "policy", "push", str(doc), "-m", "first")
        doc.write_text(json.dumps({"budget": {"daily_usd": 20}}))
        assert "version 2" in _run("admin", "policy", "push", str(doc))
        assert json.loads(_run("admin", "policy", "show")) == {"budget": {"daily_usd": 20}}
        diff = _run("admin", "policy", "diff", "1", "2")
        assert '-    "daily_usd": 10' in diff and '+    "daily_usd": 20' in diff
        assert "now version 3" in _run("admin", "policy", "rollback", "1")
        history = json.loads(_run("admin", "policy", "history", "--json"))["versions"]
        assert [h["version"] for h in history] == [3, 2, 1]
        assert json.loads(_run("admin", "usage", "--by", "team", "--json"))["rows"] == []
        devices = json.loads(_run("admin", "devices", "list", "--json"))["devices"]
        assert [d["name"] for d in devices] == ["ada-laptop"]
        assert "error" in _run("admin", "--token", "csa_wrong", "teams", "list", ok=False)
        assert "policy version 4" in _run("admin", "developers", "move", "ada@example.com", "--no-team")
        assert "ok:" in _run("admin", "audit", "--verify") and "policy.rollback" in _run("admin", "audit")

        assert "unenrolled" in _run("unenroll")
        assert enrollment.load(p) is None and enrollment.secret_store(p).get(enrollment.CREDENTIAL_NAME) is None
        devices = json.loads(_run("admin", "devices", "list", "--json"))["devices"]
        assert devices[0]["revoked_at"] is not None


async def test_central_init_prints_a_bootstrap_token_once(db_url: str) -> None:
    out = await asyncio.to_thread(_run, "central", "init", "--db", db_url)
    assert "csa_" in out
    assert "already has an admin" in await asyncio.to_thread(_run, "central", "init", "--db", db_url, ok=False)
    async with CentralProcess(db_url) as server:
        assert server.bootstrap_token is None  # serve prints one only for an empty database


async def test_audit_verify_names_a_tampered_entry(central: Central) -> None:
    await central.admin("POST", "/v1/admin/teams", json={"name": "core"})
    await central.admin("POST", "/v1/admin/policy", json={"document": {"budget": {"daily_usd": 5}}})
    base = ("admin", "--url", central.url, "--token", central.admin_token, "audit", "--verify")
    assert "ok: 3 entries" in await asyncio.to_thread(_run, *base)
    async with central.store.db.tx() as tx:
        await tx.execute("UPDATE audit SET data = ? WHERE seq = 2", '{"actor":"someone else","name":"core","team":"x"}')
    out = await asyncio.to_thread(_run, *base, ok=False)
    assert "BROKEN at #2" in out
