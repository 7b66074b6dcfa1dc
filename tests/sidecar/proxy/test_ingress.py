"""Who may talk to the sidecar: loopback Hosts, no browsers, the local token where required."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from sidecar.net import host_is_loopback, upstream_proxy
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.harness import (
    InProcessSidecar,
    anthropic_config,
    ledger_rows,
    sidecar_in_process,
)

BODY = json.dumps({"model": "claude-opus-4-8", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1:8787", True), ("localhost:8787", True), ("localhost", True), ("[::1]:8787", True),
        ("127.8.9.10", True), ("foo.localhost:1", True), ("LOCALHOST.", True),
        ("evil.com", False), ("127.0.0.1.evil.com", False), ("localhost.evil.com:8787", False),
        ("10.0.0.5:8787", False), ("0.0.0.0:8787", False), ("", False), (None, False),
    ],
)
def test_host_is_loopback(host: str | None, ok: bool) -> None:
    assert host_is_loopback(host) is ok


def test_upstream_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.corp:3128")
    monkeypatch.setenv("NO_PROXY", "internal.corp")
    assert upstream_proxy("https://api.anthropic.com") == "http://proxy.corp:3128"
    assert upstream_proxy("http://127.0.0.1:11434/v1") is None
    assert upstream_proxy("http://localhost:8000") is None
    assert upstream_proxy("https://llm.internal.corp") is None
    monkeypatch.delenv("HTTPS_PROXY")
    assert upstream_proxy("https://api.anthropic.com") is None


async def error_of(resp: aiohttp.ClientResponse) -> dict[str, str]:
    data = json.loads(await resp.read())
    assert data["type"] == "error"
    return dict(data["error"])


async def test_foreign_host_is_refused(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.post(sidecar.url + "/v1/messages", data=BODY, headers={"Host": "attacker.example:8787"}) as resp:
        assert resp.status == 403
        err = await error_of(resp)
    assert err["type"] == "permission_error" and "not a loopback name" in err["message"]
    assert fake.requests == []


async def test_browser_origin_is_refused(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    for origin in ("http://localhost:3000", "null", "https://evil.example"):
        async with client.post(sidecar.url + "/v1/messages", data=BODY, headers={"Origin": origin}) as resp:
            assert resp.status == 403
            assert (await error_of(resp))["type"] == "permission_error"
    assert fake.requests == []


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"", b"[1,2]", b'{"model": 5}', b'{"model":"m","stream":"yes"}', b'{"model":"m"} trailing'],
)
async def test_malformed_requests_get_400_and_never_reach_upstream(
    payload: bytes, fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession
) -> None:
    async with client.post(sidecar.url + "/v1/messages?beta=true", data=payload, headers={"x-api-key": "k"}) as resp:
        assert resp.status == 400
        err = await error_of(resp)
    assert err["type"] == "invalid_request_error"
    assert err["message"].startswith("claude-sidecar: ")
    assert fake.requests == []
    [row] = await ledger_rows(sidecar)
    assert row["status"] == 400 and row["outcome"] == "rejected"


async def test_control_api_needs_the_token(sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url + "/sidecar/v1/status") as resp:
        assert resp.status == 401
        assert (await error_of(resp))["type"] == "authentication_error"
    async with client.get(sidecar.url + "/sidecar/v1/status", headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    async with client.get(sidecar.url + "/sidecar/v1/status", headers={"Authorization": f"Bearer {sidecar.token}"}) as resp:
        assert resp.status == 200
        assert (await resp.json())["in_flight"] == 0


async def test_health_and_preconnect_need_no_token(sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.head(sidecar.url + "/") as resp:
        assert resp.status == 200
    async with client.get(sidecar.url + "/healthz") as resp:
        assert (await resp.json())["ok"] is True


async def test_unknown_path_is_an_anthropic_404(sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url + "/nothing") as resp:
        assert resp.status == 404
        assert (await error_of(resp))["type"] == "not_found_error"
    # Under the API's /v1/ it is the gateway protocol's 501, which the client does not retry.
    async with client.get(sidecar.url + "/v1/nothing") as resp:
        assert resp.status == 501 and resp.headers["x-should-retry"] == "false"
        assert (await error_of(resp))["type"] == "not_supported"


async def test_injected_keys_require_the_local_token(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_SIDECAR_ANTHROPIC_API_KEY", "sk-ant-real-key")
    async with sidecar_in_process(anthropic_config(fake.url), hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=BODY, headers={"x-api-key": "sk-ant-client"}) as resp:
            assert resp.status == 401
            assert "local token" in (await error_of(resp))["message"]
        assert fake.requests == []
        # Claude Code with ANTHROPIC_AUTH_TOKEN=<token> sends it as a Bearer token.
        async with client.post(sc.url + "/v1/messages", data=BODY, headers={"Authorization": f"Bearer {sc.token}"}) as resp:
            assert resp.status == 200
    [req] = fake.requests
    assert req.header("x-api-key") == "sk-ant-real-key"
    assert req.header("authorization") is None


async def test_forwarding_mode_passes_client_credentials(fake: FakeAnthropic, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.post(sidecar.url + "/v1/messages", data=BODY, headers={"Authorization": "Bearer sk-ant-oat01-subscription"}) as resp:
        assert resp.status == 200
    [req] = fake.requests
    assert req.header("authorization") == "Bearer sk-ant-oat01-subscription"
    assert req.header("x-api-key") is None


async def test_require_token_in_forwarding_mode_uses_the_sidecar_header(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    cfg = "[server]\nrequire_token = true\n" + anthropic_config(fake.url)
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", data=BODY, headers={"x-api-key": "sk-ant-client"}) as resp:
            assert resp.status == 401
        hdrs = {"x-api-key": "sk-ant-client", "x-sidecar-token": sc.token}
        async with client.post(sc.url + "/v1/messages", data=BODY, headers=hdrs) as resp:
            assert resp.status == 200
    [req] = fake.requests
    assert req.header("x-api-key") == "sk-ant-client"
    assert req.header("x-sidecar-token") is None
