"""A new policy applies to a running sidecar at once (PolicyGate.apply_policy), every
section, without dropping or re-judging requests in flight; and while the org's policy is
stale past its grace period with "closed", requests are refused with what to do."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from sidecar.policy.config import read_governance
from sidecar.policy.control import POLICY
from sidecar.policy.model import Policy
from sidecar.testing.governed import (
    HeldUpstream,
    body,
    error_message,
    governed,
    policy_state,
    post,
)


def central(doc: dict[str, Any], version: int) -> Policy:
    return Policy(read_governance(doc), version, f"central v{version}")


async def test_a_policy_change_applies_at_once_and_requests_in_flight_finish(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "[limits]\nmax_concurrent = 8\n") as sc:
        gate = sc.app[POLICY]
        flights = [asyncio.ensure_future(post(client, sc, body(f"req {i}"))) for i in range(4)]
        await up.wait_received(4)
        # Everything at once: a budget (a period new to the gate), a lower cap than what is
        # in flight, a guardrail that blocks, a denied tool, a model allow list.
        gate.apply_policy(central({
            "budget": {"daily_usd": 1.0},
            "limits": {"max_concurrent": 2, "queue_seconds": 0.2},
            "guardrails": {"secrets": "block"},
            "tools": {"deny": ["Bash"]},
            "policy": {"models": ["claude-opus-*"]},
        }, 7))  # fmt: skip
        refused_model = await post(client, sc, body("hi", model="claude-haiku-4-5"))
        queued = await post(client, sc, body("over the new cap"))  # 4 in flight > 2: waits, then 429
        up.released.set()
        done = await asyncio.gather(*flights)
        refused_secret = await post(client, sc, body("my key AKIAQ3EGRTLMZN4XW7PB"))
        after = await post(client, sc, body("fits again", tools=[{"name": "Bash", "input_schema": {"type": "object"}}]))
        state = await policy_state(client, sc)
    assert [status for status, _, _ in done] == [200] * 4
    assert all(b'"text":" answer"' in raw and b"message_stop" in raw for _, _, raw in done)  # whole streams
    assert refused_model[0] == 400 and "not allowed by the policy" in error_message(refused_model[2])
    assert refused_secret[0] == 400 and json.loads(refused_secret[2])["error"]["type"] == "policy_blocked"
    assert queued[0] == 429 and "max_concurrent = 2" in error_message(queued[2])
    assert after[0] == 200 and not up.received[-1].get("tools")  # Bash was stripped
    assert state["policy"]["version"] == 7 and state["limits"]["in_flight"] == 0
    [day] = state["budgets"]
    assert day["limit_usd"] == 1.0 and day["in_flight"] == 0 and day["reserved_usd"] == 0


async def test_lifting_the_cap_lets_queued_requests_through(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "[limits]\nmax_concurrent = 1\nqueue_seconds = 30\n") as sc:
        gate = sc.app[POLICY]
        flights = [asyncio.ensure_future(post(client, sc, body(f"req {i}"))) for i in range(3)]
        await up.wait_received(1)
        gate.apply_policy(central({"limits": {"max_concurrent": 3}}, 2))
        await up.wait_received(3)  # the two queued ones went upstream without waiting for the first
        up.released.set()
        done = await asyncio.gather(*flights)
        gate.apply_policy(central({}, 3))  # no limits at all: the slot holders have released
        state = await policy_state(client, sc)
    assert [s for s, _, _ in done] == [200] * 3
    assert gate.limits._slots is not None and gate.limits._slots.in_use == 0
    assert state["policy"]["version"] == 3


async def test_stale_past_grace_with_closed_refuses_with_what_to_do(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "") as sc:
        reason: list[str | None] = ["cannot reach the org's central server at http://c since 2026-12-01 10:00 UTC; reconnect or ask your admin"]
        sc.app[POLICY].closed = lambda: reason[0]
        status, headers, raw = await post(client, sc, body("hi"))
        reason[0] = None
        up.released.set()
        again = await post(client, sc, body("hi"))
    assert status == 503 and headers["x-should-retry"] == "false"
    env = json.loads(raw)
    assert env["error"]["type"] == "api_error" and "reconnect or ask your admin" in env["error"]["message"]
    assert again[0] == 200 and len(up.received) == 1  # the refused request never went upstream


async def test_a_policy_that_newly_redacts_loads_the_redaction_key(hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "") as sc:
        up.released.set()
        key_file = sc.paths.data_dir / "redaction.key"
        assert not key_file.exists()  # no guardrail at start: no key
        sc.app[POLICY].apply_policy(central({"guardrails": {"secrets": "redact"}}, 2))
        status, _, _ = await post(client, sc, body("my key AKIAQ3EGRTLMZN4XW7PB"))
    assert status == 200 and "AKIAQ3EGRTLMZN4XW7PB" not in json.dumps(up.received[-1])
    assert "[REDACTED:aws_access_key:" in json.dumps(up.received[-1])
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_bytes()) == 32


async def test_the_audit_log_names_each_policy_put_in_force_and_follows_its_log_content(
    hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    from sidecar.appkeys import STAGES
    from sidecar.audit.stage import AuditStage
    from sidecar.testing.audit import audit_entries

    async with HeldUpstream({"input_tokens": 10, "output_tokens": 5}) as up, governed(up.url, hermetic_env, "") as sc:
        up.released.set()
        [audit] = [s for s in sc.app[STAGES] if isinstance(s, AuditStage)]
        policy = central({"policy": {"log_content": True}}, 4)
        sc.app[POLICY].apply_policy(policy)
        audit.apply_policy(policy)
        await post(client, sc, body("the quiet lighthouse"))
    kinds = [e["kind"] for e in audit_entries(hermetic_env)]
    _, change, request, _ = audit_entries(hermetic_env)
    assert kinds == ["start", "policy", "request", "stop"]
    assert (change["version"], change["source"], change["digest"], change["log_content"]) == (4, "central v4", policy.digest, True)
    assert "lighthouse" in json.dumps(request["content"]["request"])
