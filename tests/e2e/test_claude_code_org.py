"""End to end, the org: the real Claude Code CLI through a sidecar enrolled with a central
server. An admin denies the model Claude Code uses; the next `claude -p` is refused with the
policy's message; the admin allows it again; the next one passes. Nothing is restarted.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.central import CentralProcess
from tests.e2e.helpers import (
    CLAUDE_TIMEOUT,
    MODEL,
    Done,
    Setup,
    claude_bin,
    claude_latest_bin,
    claude_result,
    posts,
    run,
    sidecar_cli,
    start_sidecar,
)

pytestmark = pytest.mark.e2e


async def _admin(http: aiohttp.ClientSession, central: CentralProcess, method: str, path: str, body: object = None) -> dict[str, object]:
    async with http.request(method, central.url + path, json=body, headers={"authorization": f"Bearer {central.bootstrap_token}"}) as r:
        data = await r.json()
        assert r.status < 300, (path, r.status, data)
        return dict(data)


async def _messages_rows(db_file: Path) -> int:
    """The ledger's rows for POST /v1/messages (and count_tokens), once it has written them all."""
    deadline, count, last = time.monotonic() + 10, -1, -2
    while time.monotonic() < deadline and count != last:
        last = count
        await asyncio.sleep(0.5)
        db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
        try:
            count = int(db.execute("SELECT COUNT(*) FROM usage WHERE endpoint LIKE '/v1/messages%'").fetchone()[0])
        finally:
            db.close()
    return count


async def _refusals(db_file: Path) -> int:
    """The ledger's 400 rows, once the ledger has written what it holds (it writes in batches)."""
    deadline = time.monotonic() + 10
    count = 0
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
        try:
            count = int(db.execute("SELECT COUNT(*) FROM usage WHERE status = 400").fetchone()[0])
        finally:
            db.close()
        if count:
            await asyncio.sleep(1.0)  # a retry would land within this second
            db = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True)
            try:
                return int(db.execute("SELECT COUNT(*) FROM usage WHERE status = 400").fetchone()[0])
            finally:
                db.close()
        await asyncio.sleep(0.1)
    return count


async def _enforced(s: Setup, version: int) -> None:
    """Until the sidecar runs policy `version` (read from `claude-sidecar status --json`)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = await sidecar_cli(s.sidecar_env, "status", "--json")
        sync = json.loads(done.out).get("sync") or {}
        if (sync.get("policy") or {}).get("version") == version:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"the sidecar did not take policy v{version}: {sync}")


async def run_claude(s: Setup, cc_env: dict[str, str], prompt: str, cli: str) -> Done:
    """`claude -p PROMPT` with the pinned (2.1.197) or the newest pinned CLI."""
    exe = claude_bin() if cli == "pinned" else claude_latest_bin()
    return await run(exe, "-p", prompt, "--output-format", "json", env=s.claude_env(**cc_env), cwd=s.workdir, time_limit=CLAUDE_TIMEOUT)


@pytest.mark.parametrize("cli", ["pinned", "newest"])
async def test_an_org_push_denies_and_allows_claude_codes_model_without_a_restart(setup: Setup, tmp_path: Path, cli: str) -> None:
    s = setup
    async with CentralProcess(f"sqlite:///{tmp_path / 'central.db'}") as central, aiohttp.ClientSession() as http:
        await _admin(http, central, "POST", "/v1/admin/developers", {"email": "dev@example.com"})
        token = await _admin(http, central, "POST", "/v1/admin/enrollment-tokens", {"developer": "dev@example.com"})
        enrolled = await sidecar_cli(s.sidecar_env, "enroll", central.url, "--token", str(token["token"]))
        assert enrolled.rc == 0, enrolled.describe()
        cc_env = await start_sidecar(s)
        pid = json.loads(s.state_file.read_text())["pid"]

        first = await run_claude(s, cc_env, "Say hello.", cli)
        assert first.rc == 0 and claude_result(first)["is_error"] is False, first.describe()

        pushed = await _admin(http, central, "POST", "/v1/admin/policy",
                              {"scope": "org", "document": {"policy": {"deny_models": ["claude-opus-*"]}}})  # fmt: skip
        await _enforced(s, int(str(pushed["version"])))
        upstream_before = len(posts(s.fake))
        denied = await run_claude(s, cc_env, "Say hello again.", cli)
        result = claude_result(denied)
        assert denied.rc == 1 and result["is_error"] is True, denied.describe()
        model = MODEL if cli == "pinned" else "claude-opus-5-5"  # each CLI's default main model
        assert f"the model '{model}' is not allowed by the policy (denied: claude-opus-*)" in result["result"], result
        assert len(posts(s.fake)) == upstream_before  # refused at the sidecar: nothing went upstream
        refusals = await _refusals(s.db_file)
        if cli == "pinned":
            assert refusals == 1  # and Claude Code did not ask again
        else:
            # 2.1.332 re-sends an unrecognised 400 a few times, each time without one of its
            # betas (its own fallbacks; docs/claude-code.md): all refused, none upstream.
            assert 1 <= refusals <= 8, refusals

        pushed = await _admin(http, central, "POST", "/v1/admin/policy", {"scope": "org", "document": {}})
        await _enforced(s, int(str(pushed["version"])))
        again = await run_claude(s, cc_env, "Say hello once more.", cli)
        assert again.rc == 0 and claude_result(again)["is_error"] is False, again.describe()
        assert json.loads(s.state_file.read_text())["pid"] == pid  # the same daemon throughout

        # Every Messages request this CLI sent took the listener's fast path (sidecar/proxy/lane.py):
        # one ledger row each (answered, refused or cached), one fast-path count each.
        async with http.get(cc_env["ANTHROPIC_BASE_URL"] + "/healthz") as resp:
            served = int((await resp.json())["fast_path_served"])
        rows = await _messages_rows(s.db_file)
        assert served == rows >= 3, (served, rows)
