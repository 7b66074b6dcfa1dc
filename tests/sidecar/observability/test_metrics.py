"""GET /metrics after real traffic through the sidecar, checked against the ledger's rows."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_behaviours import Text
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)
from sidecar.testing.requirements import require_tool

MODEL = "claude-metrics-1"
CONFIG = f"""
[pricing."{MODEL}"]
input = 3.0
output = 15.0
cache_read = 0.3
cache_write = 3.75

[budget]
daily_usd = 50.0

[policy]
deny_models = ["claude-forbidden-*"]

[cache]
reask_window_seconds = 0  # the repeat is served from the cache
"""


def _body(text: str, stream: bool = False, model: str = MODEL) -> bytes:
    return json.dumps({"model": model, "max_tokens": 50, "stream": stream,
                       "messages": [{"role": "user", "content": text}]}).encode()


def _samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _types(text: str) -> dict[str, str]:
    return {fam.name: fam.type for fam in text_string_to_metric_families(text)}


def _sum(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in samples if all(labels.get(k) == want for k, want in match.items()))


async def _traffic(sc: InProcessSidecar, fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    hdrs = {"x-api-key": "client-key", "content-type": "application/json"}
    fake.script(
        Text("first answer", usage={"cache_read_input_tokens": 120, "cache_creation_input_tokens": 40}),
        Text("a streamed answer with several words"),
        Text("another streamed answer"),
    )
    for body in (_body("what is 2+2?"), _body("what is 2+2?"),  # the repeat is an exact cache hit
                 _body("tell me a story", stream=True), _body("tell me another", stream=True),
                 _body("blocked", model="claude-forbidden-9")):
        async with client.post(sc.url + "/v1/messages", data=body, headers=hdrs) as resp:
            await resp.read()


async def test_metrics_after_traffic_match_the_ledger(fake: FakeAnthropic, client: aiohttp.ClientSession,
                                                      hermetic_env: Path) -> None:
    async with sidecar_in_process(anthropic_config(fake.url, CONFIG), hermetic_env) as sc:
        await _traffic(sc, fake, client)
        async with client.post(sc.url + "/v1/messages", data=_body("x"), headers={"origin": "http://web.test"}) as resp:
            assert resp.status == 403  # refused at ingress: a ledger row, and counted
        async with client.get(sc.url + "/metrics") as resp:
            assert resp.status == 401  # the local token, as on the control API
        auth = {"authorization": f"Bearer {sc.token}"}
        async with client.get(sc.url + "/metrics", headers=auth) as resp:
            assert resp.status == 200
            assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = await resp.text()
        rows = await ledger_rows(sc)

    assert len(rows) == 6
    s, types = _samples(text), _types(text)
    assert types["claude_sidecar_requests"] == "counter"
    assert types["claude_sidecar_request_duration_seconds"] == "histogram"
    assert types["claude_sidecar_time_to_first_token_seconds"] == "histogram"
    assert types["claude_sidecar_budget_utilisation_ratio"] == "gauge"
    assert types["claude_sidecar_breaker_state"] == "gauge"

    # Requests by outcome, as the ledger has them.
    by_outcome = Counter(r["outcome"] for r in rows)
    assert by_outcome == {"ok": 4, "rejected": 2}
    for outcome, n in by_outcome.items():
        assert _sum(s["claude_sidecar_requests_total"], outcome=outcome) == n
    assert _sum(s["claude_sidecar_requests_total"], model=MODEL, route="default", provider="anthropic") == 3
    assert _sum(s["claude_sidecar_requests_total"], model=MODEL, provider="cache") == 1  # as the ledger names a hit
    assert _sum(s["claude_sidecar_responses_total"], status_class="4xx") == 2  # the policy's 400, the Origin's 403

    # Tokens by type and cost, summed over the rows.
    for kind, col in (("input", "input_tokens"), ("output", "output_tokens"),
                      ("cache_read", "cache_read_tokens"), ("cache_write", "cache_write_tokens")):
        assert _sum(s["claude_sidecar_tokens_total"], type=kind) == sum(r[col] for r in rows), kind
    cost = sum(r["cost_usd"] or 0 for r in rows)
    assert cost > 0 and _sum(s["claude_sidecar_cost_usd_total"]) == pytest.approx(cost, rel=1e-9)

    # Cache outcomes and savings.
    cache = Counter(r["cache_outcome"] for r in rows if r["cache_outcome"])
    assert cache["hit-exact"] == 1
    for outcome, n in cache.items():
        assert _sum(s["claude_sidecar_cache_requests_total"], outcome=outcome) == n
    saved = sum(r["saved_usd"] or 0 for r in rows)
    assert saved > 0 and _sum(s["claude_sidecar_cache_saved_usd_total"]) == pytest.approx(saved)

    # Latency and time to first token: one observation per routed request.
    routed = [r for r in rows if r["provider"]]
    assert _sum(s["claude_sidecar_request_duration_seconds_count"]) == len(routed)
    assert _sum(s["claude_sidecar_request_duration_seconds_sum"]) == pytest.approx(
        sum(r["latency_ms"] for r in routed) / 1000, rel=0.5)
    assert _sum(s["claude_sidecar_time_to_first_token_seconds_count"]) == sum(1 for r in routed if r["ttft_ms"] is not None)

    # Policy decisions, breakers, budgets.
    assert _sum(s["claude_sidecar_policy_decisions_total"], stage="cache", action="hit-exact") == 1
    assert any(labels["action"] == "deny" for labels, _ in s["claude_sidecar_policy_decisions_total"]) or \
        _sum(s["claude_sidecar_requests_total"], outcome="rejected") == 1
    assert _sum(s["claude_sidecar_breaker_state"], state="closed") >= 1
    assert _sum(s["claude_sidecar_breaker_state"], state="open") == 0
    spent = _sum(s["claude_sidecar_budget_spent_usd"], period="day")
    assert spent == pytest.approx(cost, rel=1e-6)
    assert _sum(s["claude_sidecar_budget_utilisation_ratio"], period="day") == pytest.approx(spent / 50.0)

    # Never a user, session or request id among the labels.
    names = {k for samples in s.values() for labels, _ in samples for k in labels}
    assert names <= {"provider", "model", "route", "outcome", "status_class", "type", "stage", "action",
                     "target", "state", "period", "version", "le"}

    require_tool("promtool", "./scripts/test installs Debian's prometheus package")
    res = await asyncio.to_thread(subprocess.run, ["promtool", "check", "metrics"], input=text, capture_output=True,
                                  text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


async def test_metrics_can_be_turned_off(fake: FakeAnthropic, client: aiohttp.ClientSession, hermetic_env: Path) -> None:
    cfg = anthropic_config(fake.url, "[observability]\nmetrics = false\n")
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        async with client.get(sc.url + "/metrics", headers={"authorization": f"Bearer {sc.token}"}) as resp:
            assert resp.status == 404


async def test_a_model_label_a_client_invents_is_bounded() -> None:
    from sidecar.observability.metrics import OTHER, Bounded

    b = Bounded(cap=3)
    assert [b(f"m{i}") for i in range(5)] == ["m0", "m1", "m2", OTHER, OTHER]
    assert b("m1") == "m1"
