"""Gateway sign-in on a real sidecar: the device flow as Claude Code runs it (discovery,
device authorization, polling, approval through the control API, refresh, revocation), and
what the tokens may do: the proxied endpoints only, never upstream, never the control API."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import aiohttp
import pytest

from sidecar.gateway.oauth import ACCESS_SECONDS, DEVICE_GRANT, GatewayAuth, TokenError, normal_code
from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.governed import body, governed
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

UA = {"user-agent": "claude-code/2.1.332"}


async def form(client: aiohttp.ClientSession, url: str, data: dict[str, str]) -> tuple[int, dict[str, object]]:
    async with client.post(url, data=data, headers=UA) as resp:
        text = await resp.text()
        return resp.status, (json.loads(text) if text else {})


async def sign_in(client: aiohttp.ClientSession, sc: InProcessSidecar) -> dict[str, object]:
    """The device flow end to end; the token answer."""
    async with client.get(sc.url + "/.well-known/oauth-authorization-server", headers=UA) as resp:
        meta = await resp.json()
    assert meta["device_authorization_endpoint"] == sc.url + "/oauth/device_authorization"
    assert meta["token_endpoint"] == sc.url + "/oauth/token" and meta["revocation_endpoint"] == sc.url + "/oauth/revoke"
    assert "authorization_endpoint" not in meta
    status, dev = await form(client, str(meta["device_authorization_endpoint"]), {"surface": "claude_code", "extra": "ignored"})
    assert status == 200 and dev["interval"] and dev["expires_in"] == 600
    code = str(dev["user_code"])
    assert len(code) == 9 and code[4] == "-" and set(code.replace("-", "")) <= set("BCDFGHJKLMNPQRSTVWXZ")
    assert code in str(dev["login_notice"]) and dev["verification_uri_complete"] == f"{sc.url}/oauth/device?user_code={code}"
    poll = {"grant_type": DEVICE_GRANT, "device_code": str(dev["device_code"])}
    status, pending = await form(client, str(meta["token_endpoint"]), poll)
    assert (status, pending["error"]) == (400, "authorization_pending")
    # The browser page only says how to approve; approving needs the local token.
    async with client.get(str(dev["verification_uri_complete"])) as resp:
        assert f"claude-sidecar login-approve {code}" in await resp.text()
    async with client.post(f"{sc.url}/sidecar/v1/gateway/approve/{code}") as resp:
        assert resp.status == 401
    async with client.post(f"{sc.url}/sidecar/v1/gateway/approve/{code.lower().replace('-', '')}", headers={"authorization": f"Bearer {sc.token}"}) as resp:
        assert resp.status == 200 and (await resp.json())["approved"] is True
    status, tokens = await form(client, str(meta["token_endpoint"]), poll)
    assert status == 200 and tokens["token_type"] == "Bearer" and tokens["expires_in"] == ACCESS_SECONDS
    status, again = await form(client, str(meta["token_endpoint"]), poll)
    assert (status, again["error"]) == (400, "invalid_grant")  # a device code is single-use
    return tokens


async def call(client: aiohttp.ClientSession, sc: InProcessSidecar, access: str) -> tuple[int, aiohttp.typedefs.LooseHeaders, dict[str, object]]:
    async with client.post(sc.url + "/v1/messages", json=body(stream=False), headers={"authorization": f"Bearer {access}"}) as resp:
        return resp.status, resp.headers, await resp.json()


def own_key_config(upstream: str) -> str:
    """One Anthropic provider that holds its own key: a signed-in client sends no Anthropic credential."""
    return f'[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "{upstream}"\nkeys = ["env:FAKE_UPSTREAM_KEY"]\n'


async def test_the_device_flow_signs_claude_code_in_and_the_token_never_goes_upstream(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", "sk-ant-upstream")
    async with sidecar_in_process(own_key_config(fake.url), hermetic_env) as sc:
        tokens = await sign_in(client, sc)
        access, refresh = str(tokens["access_token"]), str(tokens["refresh_token"])
        status, _, answer = await call(client, sc, access)
        assert status == 200 and answer["type"] == "message"
        sent = dict((k.lower(), v) for k, v in fake.requests[-1].headers)
        assert "authorization" not in sent and sent["x-api-key"] == "sk-ant-upstream"
        assert access not in json.dumps(fake.requests[-1].headers)
        # The OTLP exporter's form, x-api-key: accepted, and removed like the bearer.
        async with client.post(sc.url + "/v1/messages", json=body(stream=False), headers={"x-api-key": access}) as resp:
            assert resp.status == 200
        sent = dict((k.lower(), v) for k, v in fake.requests[-1].headers)
        assert sent["x-api-key"] == "sk-ant-upstream"
        # Without a token (the provider injects keys, so one is needed): 401, no retry.
        async with client.post(sc.url + "/v1/messages", json=body()) as resp:
            assert resp.status == 401 and resp.headers["x-should-retry"] == "false"
        # The token is not the control API's.
        async with client.get(sc.url + "/sidecar/v1/status", headers={"authorization": f"Bearer {access}"}) as resp:
            assert resp.status == 401
        # Refresh rotates both; the spent refresh token is the deprovisioning answer.
        status, fresh = await form(client, sc.url + "/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh})
        assert status == 200 and fresh["access_token"] != access and fresh["refresh_token"] != refresh
        status, spent = await form(client, sc.url + "/oauth/token", {"grant_type": "refresh_token", "refresh_token": refresh})
        assert (status, spent["error"]) == (401, "invalid_grant")
        # Sign-out revokes the bearer: its next request is a 401 the client does not retry.
        new_access = str(fresh["access_token"])
        assert (await call(client, sc, new_access))[0] == 200
        async with client.post(sc.url + "/oauth/revoke", data={"token": new_access}) as resp:
            assert resp.status == 200
        status, headers, err = await call(client, sc, new_access)
        assert status == 401 and headers["x-should-retry"] == "false" and err["error"]["type"] == "authentication_error"  # type: ignore[index]
        assert "sign in again with /login" in err["error"]["message"]  # type: ignore[index]
    store = (hermetic_env / "state" / "gateway-tokens.json")
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert access not in store.read_text() and refresh not in store.read_text()  # digests only


async def test_a_foreign_gateway_token_is_refused_even_where_no_token_is_needed(
    fake: FakeAnthropic, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with governed(fake.url, hermetic_env, "") as sc:
        status, headers, _ = await call(client, sc, "csgw_not-one-of-ours")
    assert status == 401 and headers["x-should-retry"] == "false" and fake.requests == []


def test_tokens_expire_and_survive_a_restart(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = tmp_path / "tokens.json"
    auth = GatewayAuth(path, clock=lambda: now[0])
    tokens = auth.issue("claude_code")
    assert GatewayAuth(path, clock=lambda: now[0]).valid(tokens["access_token"])
    now[0] += ACCESS_SECONDS + 1
    assert not auth.valid(tokens["access_token"])
    assert auth.refresh(tokens["refresh_token"])["access_token"]  # the refresh token lives longer


def test_device_codes_expire_and_polling_too_fast_is_slowed_down() -> None:
    now = [0.0]
    auth = GatewayAuth(None, clock=lambda: now[0])
    code, device = auth.start_device("claude_code")
    with pytest.raises(TokenError, match="approve it with"):
        auth.poll(code)
    with pytest.raises(TokenError) as slow:
        auth.poll(code)
    assert slow.value.error == "slow_down"
    now[0] += 601
    assert not auth.approve(device.user_code)
    with pytest.raises(TokenError) as expired:
        auth.poll(code)
    assert expired.value.error == "expired_token"


def test_user_codes_are_accepted_as_typed() -> None:
    assert normal_code("wdjb mjht") == normal_code("WDJB-MJHT") == "WDJB-MJHT"


def test_a_flood_of_sign_ins_is_slowed_down() -> None:
    auth = GatewayAuth(None, clock=lambda: 0.0)
    for _ in range(32):
        auth.start_device("claude_code")
    with pytest.raises(TokenError) as err:
        auth.start_device("claude_code")
    assert (err.value.error, err.value.status) == ("slow_down", 429)
