"""The gateway protocol on a real sidecar, against a real fake upstream on loopback: the
refusals Claude Code understands, the budget's standing on successful answers, the usage
and managed-settings endpoints, the base-URL prefix and 501 for what is not served."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from multidict import CIMultiDict

from sidecar.gateway.settings import checksum
from sidecar.testing.fake_anthropic import Error, FakeAnthropic, Text
from sidecar.testing.governed import body, error_message, governed
from sidecar.testing.harness import InProcessSidecar, ledger_rows

U = "anthropic-ratelimit-unified-"


async def post(
    client: aiohttp.ClientSession, sc: InProcessSidecar, payload: dict[str, Any], path: str = "/v1/messages"
) -> tuple[int, CIMultiDict[str], bytes]:
    """POST `payload`; the status, the headers (case-insensitive) and the whole body."""
    async with client.post(sc.url + path, json=payload, headers={"x-api-key": "sk-ant-test"}) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.read()


BUDGET = '[usage]\ntimezone = "Asia/Kolkata"\n[budget]\ndaily_usd = 1.0\n'


async def test_an_exhausted_budget_is_a_billing_error_with_the_rejection_headers(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    fake.script(Text(usage={"input_tokens": 200_000}))  # $1.00 of input: the budget is used up
    async with governed(fake.url, hermetic_env, BUDGET) as sc:
        first = await post(client, sc, body())
        status, headers, raw = await post(client, sc, body())
        rows = await ledger_rows(sc)
    assert first[0] == 200 and status == 429 and len(fake.requests) == 1
    assert json.loads(raw)["error"]["type"] == "billing_error"
    assert headers["x-should-retry"] == "false" and int(headers["retry-after"]) > 0
    assert headers[U + "status"] == "rejected" and headers[U + "overage-disabled-reason"] == "org_spend_cap_reached"
    assert headers[U + "overage-period"] == "daily" and headers[U + "overage-utilization"] == "1"
    assert U + "representative-claim" not in headers and U + "overage-status" not in headers
    assert error_message(raw).startswith("claude-sidecar: the daily budget of $1.00 is used up ($1.00 spent today); it resets at ")
    assert rows[1]["error_type"] == "billing_error"


async def test_a_request_larger_than_the_budget_is_a_billing_error_not_a_403(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    # 200,000 characters of input cost more than a $0.01 budget before any output token.
    small = BUDGET.replace("daily_usd = 1.0", "daily_usd = 0.01")
    async with governed(fake.url, hermetic_env, small) as sc:
        status, headers, raw = await post(client, sc, body("x" * 200_000))
    assert status == 429 and fake.requests == []
    assert json.loads(raw)["error"]["type"] == "billing_error" and headers["x-should-retry"] == "false"
    assert "more than the whole daily budget of $0.01" in error_message(raw)


async def test_a_denied_model_is_an_invalid_request(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, '[policy]\nmodels = ["claude-sonnet-*"]\n') as sc:
        status, _, raw = await post(client, sc, body(model="claude-opus-4-8"))
    assert status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    assert error_message(raw) == "claude-sidecar: the model 'claude-opus-4-8' is not allowed by the policy (allowed: claude-sonnet-*)"
    assert fake.requests == []


async def test_a_guardrail_block_is_policy_blocked_with_the_audit_id(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    secret = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
    async with governed(fake.url, hermetic_env, '[guardrails]\ndetectors = { github_token = "block" }\n') as sc:
        status, headers, raw = await post(client, sc, body(f"deploy with {secret}"))
    db = sqlite3.connect(sc.paths.db_file)  # closed: the audit log is written out
    try:
        audited = [r[0] for r in db.execute("SELECT request_id FROM audit WHERE kind = 'request'")]
    finally:
        db.close()
    env = json.loads(raw)
    assert status == 400 and env["error"]["type"] == "policy_blocked" and headers["x-should-retry"] == "false"
    assert env["request_id"] == headers["x-sidecar-request-id"] and audited == [env["request_id"]]
    assert fake.requests == []


async def test_unserved_endpoints_are_501_not_supported(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "") as sc:
        for method, path in [("POST", "/v1/messages/batches"), ("GET", "/v1/files"), ("POST", "/anthropic/v1/complete")]:
            async with client.request(method, sc.url + path, headers={"x-api-key": "k"}) as resp:
                raw = await resp.read()
                assert resp.status == 501, (path, raw)
                assert resp.headers["x-should-retry"] == "false"
                assert json.loads(raw)["error"]["type"] == "not_supported"
        async with client.get(sc.url + "/nowhere") as resp:
            assert resp.status == 404  # outside the API: still a plain 404
        for signal in ("metrics", "logs", "traces"):  # the client's OTLP: 200, or it logs every flush
            async with client.post(f"{sc.url}/v1/{signal}", data=b"\x0a\x00", headers={"content-type": "application/x-protobuf"}) as resp:
                assert resp.status == 200
    assert fake.requests == []


async def test_upstream_error_bodies_pass_through_untouched(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    fake.script(Error(400, "invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"))
    async with governed(fake.url, hermetic_env, BUDGET) as sc:
        status, headers, raw = await post(client, sc, body(stream=False))
    assert status == 400
    env = json.loads(raw)
    assert env["error"] == {"type": "invalid_request_error", "message": "prompt is too long: 250000 tokens > 200000 maximum"}
    assert env["request_id"].startswith("req_011C") and U + "status" not in headers


async def test_successful_answers_carry_the_budget_standing_in_place_of_the_upstreams(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    # $0.80 of the $1.00 budget on the first answer; the next one is past 75%.
    fake.script(Text(usage={"input_tokens": 160_000, "output_tokens": 0}), Text(), Text())
    async with governed(fake.url, hermetic_env, BUDGET) as sc:
        first = await post(client, sc, body(max_tokens=100))
        second = await post(client, sc, body(max_tokens=100))
        plain = await post(client, sc, body(max_tokens=100, stream=False))
    for status, headers, _ in (first, second, plain):
        assert status == 200
        assert not any(k.lower().startswith("anthropic-ratelimit-") and not k.lower().startswith(U) for k in headers)
    assert first[1][U + "status"] == "allowed" and first[1][U + "overage-utilization"] == "0.00"
    assert U + "overage-surpassed-threshold" not in first[1]
    h = second[1]
    assert (h[U + "status"], h[U + "overage-status"], h[U + "representative-claim"]) == ("allowed_warning", "allowed_warning", "overage")
    assert h[U + "overage-utilization"] == "0.80" and h[U + "overage-surpassed-threshold"] == "0.75"
    assert h[U + "reset"] == h[U + "overage-reset"] and int(h[U + "reset"]) > 0
    assert plain[1][U + "status"] == "allowed_warning"


async def test_without_a_budget_the_upstreams_headers_stay(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "") as sc:
        status, headers, _ = await post(client, sc, body())
    assert status == 200 and "anthropic-ratelimit-requests-limit" in headers
    assert not any(k.lower().startswith(U) for k in headers)


async def test_usage_endpoint_shows_the_budget_in_dollars(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    fake.script(Text(usage={"input_tokens": 160_000, "output_tokens": 0}))
    async with governed(fake.url, hermetic_env, BUDGET) as sc:
        assert (await post(client, sc, body(max_tokens=100)))[0] == 200
        async with client.get(sc.url + "/api/oauth/usage") as resp:
            assert resp.status == 200 and resp.headers["cache-control"] == "no-store"
            doc = await resp.json()
        second = await post(client, sc, body(max_tokens=100))
    assert doc["extra_usage"]["monthly_limit"] == 100 and doc["extra_usage"]["used_credits"] == 80
    [row] = doc["limits"]
    assert (row["group"], row["percent"], row["is_active"]) == ("daily", 80, True)
    reset = second[1][U + "overage-reset"]
    assert row["resets_at"] == datetime.fromtimestamp(int(reset), UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


async def test_usage_endpoint_without_a_budget_shows_spend(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    fake.script(Text(usage={"input_tokens": 200_000, "output_tokens": 0}))
    async with governed(fake.url, hermetic_env, "") as sc:
        assert (await post(client, sc, body()))[0] == 200
        await ledger_rows(sc)
        async with client.get(sc.url + "/api/oauth/usage") as resp:
            doc = await resp.json()
    assert doc["limits"] == []
    extra = doc["extra_usage"]
    assert extra["used_credits"] == 100 and extra["daily"]["used_credits"] == 100 and extra["monthly_limit"] is None


SETTINGS = """
[claude_code.settings]
model = "claude-sonnet-5"
[claude_code.settings.permissions]
deny = ["Bash(curl:*)"]
[claude_code.settings.env]
CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY = "1"
"""


async def test_managed_settings_with_checksum_etag_and_304(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    settings = {"model": "claude-sonnet-5", "permissions": {"deny": ["Bash(curl:*)"]}, "env": {"CLAUDE_CODE_ENABLE_GATEWAY_MODEL_DISCOVERY": "1"}}
    expected = checksum(settings)
    async with governed(fake.url, hermetic_env, SETTINGS) as sc:
        async with client.get(sc.url + "/managed/settings") as resp:
            doc = await resp.json()
            assert resp.status == 200 and resp.headers["etag"] == f'"{expected}"'
        assert doc["checksum"] == expected and doc["settings"] == settings and doc["uuid"]
        async with client.get(sc.url + "/managed/settings", headers={"if-none-match": f'"{expected}"'}) as resp:
            assert resp.status == 304 and resp.headers["etag"] == f'"{expected}"'
        async with client.get(sc.url + "/managed/settings", headers={"if-none-match": '"sha256:stale"'}) as resp:
            assert resp.status == 200
        async with client.get(sc.url + "/managed/settings", headers={"if-none-match": "*"}) as resp:
            assert resp.status == 200  # answered as if the header were absent
    async with governed(fake.url, hermetic_env, "") as sc, client.get(sc.url + "/managed/settings") as resp:
        assert resp.status == 404 and (await resp.json())["error"]["type"] == "not_found_error"
    async with governed(fake.url, hermetic_env, "[claude_code.settings]\n") as sc, client.get(sc.url + "/managed/settings") as resp:
        assert resp.status == 200 and (await resp.json())["settings"] == {}  # an empty policy, not none


async def test_requests_under_the_anthropic_prefix_are_served(fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    async with governed(fake.url, hermetic_env, "") as sc:
        status, _, raw = await post(client, sc, body(stream=False), path="/anthropic/v1/messages?beta=true")
        counted = await post(client, sc, body(stream=False), path="/anthropic/v1/messages/count_tokens")
        async with client.get(sc.url + "/anthropic/v1/models", headers={"x-api-key": "k"}) as resp:
            models = await resp.json()
    assert status == 200 and json.loads(raw)["type"] == "message" and counted[0] == 200
    assert [(r.path, r.query_string) for r in fake.requests][:2] == [("/v1/messages", "beta=true"), ("/v1/messages/count_tokens", "")]
    assert models["data"]
