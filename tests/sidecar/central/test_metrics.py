"""The central server's GET /metrics: org aggregates by team and model, for admins, checked by promtool."""

from __future__ import annotations

import asyncio
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.testing.central import Central
from sidecar.testing.factories import usage_dicts
from sidecar.testing.requirements import require_tool


async def test_org_metrics_match_the_usage_report(central: Central) -> None:
    a = (await central.enroll_device("ada@example.com", team="core"))["credential"]
    b = (await central.enroll_device("bob@example.com"))["credential"]
    ra, rb = usage_dicts(30, seed=1), usage_dicts(20, seed=2)
    await central.call("POST", "/v1/usage", a, json={"records": ra})
    await central.call("POST", "/v1/usage", b, json={"records": rb})

    status, _ = await central.call("GET", "/metrics")
    assert status == 401
    status, _ = await central.call("GET", "/metrics", a)  # a device credential is not an admin
    assert status == 401
    async with central.http.get(central.url + "/metrics", headers={"authorization": f"Bearer {central.admin_token}"}) as r:
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = await r.text()

    s: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    types = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for smp in fam.samples:
            s[(smp.name, tuple(sorted(smp.labels.items())))] = smp.value
    assert types["claude_sidecar_org_team_requests"] == "counter"
    assert s[("claude_sidecar_org_team_requests_total", (("team", "core"),))] == 30
    assert s[("claude_sidecar_org_team_requests_total", (("team", "(no team)"),))] == 20
    assert s[("claude_sidecar_org_team_cost_usd_total", (("team", "core"),))] == pytest.approx(sum(r["cost_usd"] for r in ra))
    for model in {r["model"] for r in ra + rb}:
        mine = [r for r in ra + rb if r["model"] == model]
        assert s[("claude_sidecar_org_model_requests_total", (("model", model),))] == len(mine)
        for kind, col in (("input", "input_tokens"), ("output", "output_tokens"), ("cache_read", "cache_read_tokens")):
            key = ("claude_sidecar_org_model_tokens_total", (("model", model), ("type", kind)))
            assert s[key] == sum(r[col] for r in mine)
    assert s[("claude_sidecar_org_devices", ())] == 2
    require_tool("promtool", "./scripts/test installs Debian's prometheus package")
    res = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=text, capture_output=True,
                                  text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
