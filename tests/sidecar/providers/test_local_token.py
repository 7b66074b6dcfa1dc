"""The local token never leaves the sidecar: wherever a client puts it (x-sidecar-token,
Authorization, x-api-key), no upstream receives it, for the forwarding Anthropic provider
and for a translating one. A Claude subscription login (forwarded credentials) keeps
working next to a provider whose key the sidecar injects."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from sidecar.testing.fake_anthropic import FakeAnthropic
from sidecar.testing.fake_openai import FakeOpenAI
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process
from sidecar.testing.recorder import TcpRecorder

SUBSCRIPTION = "Bearer sk-ant-oat01-subscription-login"


@pytest.fixture
async def openai_up() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


@pytest.fixture
async def wire(fake: FakeAnthropic) -> AsyncIterator[TcpRecorder]:
    """Every byte the sidecar sends to the Anthropic upstream."""
    async with TcpRecorder(int(fake.url.rsplit(":", 1)[1])) as rec:
        yield rec


@pytest.fixture
async def mixed(
    wire: TcpRecorder, openai_up: FakeOpenAI, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[InProcessSidecar]:
    """Anthropic with the client's own credentials, and OpenAI with an injected key (so the
    proxy needs the local token)."""
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-injected")
    cfg = (
        f'[[providers]]\nname = "anthropic"\ntype = "anthropic"\nbase_url = "http://127.0.0.1:{wire.port}"\n'
        f'[[providers]]\nname = "openai"\ntype = "openai"\nbase_url = "{openai_up.base_url}"\nkeys = ["env:TEST_OPENAI_KEY"]\n'
        '[[routes]]\nname = "gpt"\nmatch = { model = "gpt-*" }\ntargets = [{ provider = "openai", model = "gpt-fake-mini" }]\n'
        '[[routes]]\nname = "claude"\nmatch = { model = "*" }\ntargets = [{ provider = "anthropic" }]\n'
    )
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        yield sc


def presentations(token: str) -> list[dict[str, str]]:
    """Every way a client may carry the local token, alone and next to its own login."""
    return [
        {"x-sidecar-token": token},
        {"authorization": f"Bearer {token}"},
        {"x-api-key": token},
        {"x-sidecar-token": token, "authorization": f"Bearer {token}", "x-api-key": token},
        {"x-sidecar-token": token, "authorization": SUBSCRIPTION},
        {"authorization": SUBSCRIPTION, "x-api-key": token},
    ]


def body(model: str) -> bytes:
    return json.dumps({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).encode()


async def test_the_forwarding_anthropic_provider_never_sends_the_local_token(
    mixed: InProcessSidecar, wire: TcpRecorder, client: aiohttp.ClientSession
) -> None:
    ways = presentations(mixed.token)
    for headers in ways:
        async with client.post(mixed.url + "/v1/messages", data=body("claude-opus-4-8"), headers=headers) as resp:
            assert resp.status == 200, (headers, await resp.text())
        async with client.post(mixed.url + "/v1/messages/count_tokens", data=body("claude-opus-4-8"), headers=headers) as resp:
            assert resp.status == 200
        async with client.get(mixed.url + "/v1/models", headers=headers) as resp:
            assert resp.status == 200
    sent = wire.requests()
    assert [r.target for r in sent] == ["/v1/messages", "/v1/messages/count_tokens", "/v1/models"] * len(ways)
    assert not any(mixed.token.encode() in bytes(c.upstream) for c in wire.connections)
    for req, headers in zip(sent, [h for h in ways for _ in range(3)], strict=True):
        assert req.header("x-sidecar-token") is None and req.header("x-api-key") is None
        # The client's own login goes through untouched.
        assert req.header("authorization") == (SUBSCRIPTION if headers.get("authorization") == SUBSCRIPTION else None)


async def test_a_translating_provider_never_sends_the_local_token(
    mixed: InProcessSidecar, openai_up: FakeOpenAI, client: aiohttp.ClientSession
) -> None:
    ways = presentations(mixed.token)
    for headers in ways:
        async with client.post(mixed.url + "/v1/messages", data=body("gpt-fake"), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
    assert len(openai_up.requests) == len(ways)
    for req in openai_up.requests:
        sent = "\n".join(f"{k}: {v}" for k, v in req.headers)
        assert mixed.token not in sent and "sk-ant-oat01" not in sent, sent
        assert req.header("authorization") == "Bearer sk-openai-injected"


async def test_a_missing_token_is_a_401_that_tells_clients_not_to_retry(
    mixed: InProcessSidecar, fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    for path in ("/v1/messages", "/sidecar/v1/status"):
        async with client.post(mixed.url + path, data=body("claude-opus-4-8"), headers={"authorization": SUBSCRIPTION}) as resp:
            assert resp.status == 401
            assert resp.headers["x-should-retry"] == "false"
            assert (await resp.json())["error"]["type"] == "authentication_error"
    assert fake.requests == []
