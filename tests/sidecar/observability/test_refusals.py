"""A request the sidecar refuses at ingress (401, 403) leaves a ledger row and a log line with its reason."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import pytest
import sqlite_utils

from sidecar.appkeys import LEDGER
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import anthropic_config, sidecar_in_process

BODY = {"model": "claude-x-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


async def test_ingress_refusals_are_in_the_ledger_and_the_log(fake: FakeAnthropic, client: aiohttp.ClientSession,
                                                              hermetic_env: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "sidecar")
    cfg = anthropic_config(fake.url, "[server]\nrequire_token = true\n")
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        ids = {}
        for name, headers in (("no token", {"x-claude-code-session-id": "sess-1"}),
                              ("browser", {"origin": "http://evil.test", "x-sidecar-token": sc.token})):
            async with client.post(sc.url + "/v1/messages", json=BODY, headers=headers) as resp:
                assert resp.status in (401, 403)
                ids[name] = resp.headers["x-sidecar-request-id"]
        async with client.get(sc.url + "/sidecar/v1/status") as resp:  # the control API: logged, not a usage row
            assert resp.status == 401
        await sc.app[LEDGER].flush()
        db = sqlite_utils.Database(sc.paths.db_file)
        rows = {r["id"]: r for r in db.query("select * from usage")}
        db.conn.close()
    assert set(rows) == set(ids.values())
    denied = rows[ids["no token"]]
    assert (denied["status"], denied["outcome"], denied["error_type"]) == (401, "rejected", "authentication_error")
    assert denied["session_id"] == "sess-1" and denied["endpoint"] == "/v1/messages" and denied["cost_usd"] == 0
    browser = rows[ids["browser"]]
    assert (browser["status"], browser["error_type"]) == (403, "permission_error")
    lines = [r.getMessage() for r in caplog.records if r.name == "sidecar.proxy.ingress"]
    assert any(f"refused POST /v1/messages ({ids['no token']}): 401" in ln and "needs its local token" in ln for ln in lines)
    assert any("refused GET /sidecar/v1/status" in ln and "control API needs the local token" in ln for ln in lines)
    assert not fake.requests
