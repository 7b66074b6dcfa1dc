"""The Gemini provider through a real sidecar against the fake Gemini API: auth, paths,
options, count_tokens, the model list, errors and headers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest
import sqlite_utils

from sidecar.appkeys import LEDGER
from sidecar.errors import ConfigError
from sidecar.providers.config import ProviderConfig
from sidecar.providers.gemini import GeminiProvider
from sidecar.testing.fake_gemini import (
    FakeGemini,
    GeminiError,
    Reply,
    call,
    gemini_config,
    text,
    thought,
)
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

KEY = "test-gemini-key"
BODY: dict[str, Any] = {"model": "claude-opus-4-8", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@asynccontextmanager
async def stack(home: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeGemini, **cfg: Any) -> AsyncIterator[InProcessSidecar]:
    monkeypatch.setenv("TEST_GEMINI_KEY", KEY)
    async with sidecar_in_process(gemini_config(fake.url, **cfg), home) as sc:
        yield sc


@pytest.fixture
async def gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as f:
        yield f


def headers(sc: InProcessSidecar, **extra: str) -> dict[str, str]:
    return {"authorization": f"Bearer {sc.token}", "content-type": "application/json", **extra}


async def test_request_goes_to_generate_content_with_the_key_and_nothing_of_anthropics(
    gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession
) -> None:
    async with stack(hermetic_env, monkeypatch, gemini, extra='headers = { "x-goog-user-project" = "proj-1" }') as sc:
        hdrs = headers(sc, **{"anthropic-beta": "context-1m-2025-08-07", "x-api-key": "sk-ant-client", "anthropic-version": "2023-06-01"})
        async with client.post(sc.url + "/v1/messages?beta=true", json=BODY, headers=hdrs) as resp:
            assert resp.status == 200
            msg = await resp.json()
            assert resp.headers["x-sidecar-upstream"] == "gemini/gemini-3-pro-preview"
    assert msg["model"] == "claude-opus-4-8"  # the client's model is echoed
    assert msg["content"] == [{"type": "text", "text": "Hello from the fake Gemini."}]
    [req] = gemini.requests
    assert (req.path, req.query_string) == ("/v1beta/models/gemini-3-pro-preview:generateContent", "")
    assert req.header("x-goog-api-key") == KEY
    assert req.header("x-goog-user-project") == "proj-1"
    for name in ("anthropic-beta", "anthropic-version", "x-api-key", "authorization"):
        assert req.header(name) is None, name


@pytest.mark.parametrize("stream", [False, True])
async def test_the_ledger_records_the_model_that_served_not_the_echoed_one(
    gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession, stream: bool
) -> None:
    async with stack(hermetic_env, monkeypatch, gemini) as sc:
        async with client.post(sc.url + "/v1/messages", json={**BODY, "stream": stream}, headers=headers(sc)) as resp:
            assert resp.status == 200
            await resp.read()
        await sc.app[LEDGER].flush()
        db = sqlite_utils.Database(sc.paths.db_file)
        try:
            (row,) = list(db.query("select provider, requested_model, upstream_model, route from usage"))
        finally:
            db.conn.close()
    assert row == {"provider": "gemini", "requested_model": "claude-opus-4-8", "upstream_model": "gemini-3-pro-preview", "route": "to-gemini"}


async def test_api_version_option_and_a_versioned_base_url(hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    async with FakeGemini(api_key=KEY) as fake:
        async with stack(hermetic_env / "a", monkeypatch, fake, extra='api_version = "v1"') as sc:
            async with client.post(sc.url + "/v1/messages", json=BODY, headers=headers(sc)) as resp:
                assert resp.status == 200
        monkeypatch.setenv("TEST_GEMINI_KEY", KEY)
        cfg = gemini_config(fake.url + "/v1alpha")
        async with sidecar_in_process(cfg, hermetic_env / "b") as sc:
            async with client.post(sc.url + "/v1/messages", json={**BODY, "stream": True}, headers=headers(sc)) as resp:
                assert resp.status == 200
                await resp.read()
    assert [(r.path, r.query_string) for r in fake.requests] == [
        ("/v1/models/gemini-3-pro-preview:generateContent", ""),
        ("/v1alpha/models/gemini-3-pro-preview:streamGenerateContent", "alt=sse"),
    ]


def test_a_bad_api_version_or_headers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="api_version '1beta'"):
        GeminiProvider(ProviderConfig("g", "gemini", "https://x", options={"api_version": "1beta"}), [], None)  # type: ignore[arg-type]


async def test_without_a_key_the_client_is_told_how_to_set_one(gemini: FakeGemini, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    cfg = f'[[providers]]\nname = "gemini"\ntype = "gemini"\nbase_url = "{gemini.url}"\n'
    async with sidecar_in_process(cfg, hermetic_env) as sc:
        async with client.post(sc.url + "/v1/messages", json=BODY, headers=headers(sc)) as resp:
            assert resp.status == 400
            err = await resp.json()
    assert "claude-sidecar keys set gemini" in err["error"]["message"]
    assert "CLAUDE_SIDECAR_GEMINI_API_KEY" in err["error"]["message"]
    assert gemini.requests == []


async def test_a_wrong_key_is_googles_400(hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    async with FakeGemini(api_key="the-real-key") as fake, stack(hermetic_env, monkeypatch, fake) as sc:
        async with client.post(sc.url + "/v1/messages", json=BODY, headers=headers(sc)) as resp:
            assert resp.status == 400
            err = await resp.json()
    assert err == {"type": "error", "error": {"type": "invalid_request_error", "message": "API key not valid. Please pass a valid API key."}}


async def test_count_tokens_uses_gemini_count_tokens(gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    body = {"model": "claude-opus-4-8", "messages": [{"role": "user", "content": "foo"}], "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"c": {"type": "string"}}}}]}
    async with stack(hermetic_env, monkeypatch, gemini) as sc:
        async with client.post(sc.url + "/v1/messages/count_tokens?beta=true", json=body, headers=headers(sc)) as resp:
            assert resp.status == 200
            counted = await resp.json()
    [req] = gemini.requests
    assert req.path == "/v1beta/models/gemini-3-pro-preview:countTokens"
    sent = req.json()
    assert sent["generateContentRequest"]["tools"][0]["functionDeclarations"][0]["name"] == "Bash"
    assert counted == {"input_tokens": max(1, len(req.body) // 4)}
    assert gemini.pending == 0 and not gemini.bodies()  # never a billable generate call


async def test_count_tokens_for_an_unknown_model_is_not_a_404(hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    async with FakeGemini(api_key=KEY, known_models=("gemini-2.5-pro",)) as fake, stack(hermetic_env, monkeypatch, fake) as sc:
        async with client.post(sc.url + "/v1/messages/count_tokens", json={**BODY, "max_tokens": None}, headers=headers(sc)) as resp:
            assert resp.status == 400
            err = await resp.json()
        async with client.post(sc.url + "/v1/messages", json=BODY, headers=headers(sc)) as resp:
            assert resp.status == 404  # a generate call for a missing model is Gemini's 404
            missing = await resp.json()
    assert err["error"]["message"].startswith("Gemini cannot count tokens for 'gemini-3-pro-preview': models/gemini-3-pro-preview is not found")
    assert missing["error"]["type"] == "not_found_error"


async def test_the_model_list_is_geminis_in_anthropic_form(gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    async with stack(hermetic_env, monkeypatch, gemini, model=None) as sc:
        async with client.get(sc.url + "/v1/models", headers=headers(sc)) as resp:
            assert resp.status == 200
            listed = await resp.json()
    ids = [m["id"] for m in listed["data"]]
    assert ids == ["gemini-3-pro-preview", "gemini-3-flash-preview", "gemini-2.5-pro", "gemini-2.5-flash"]
    assert listed["first_id"] == ids[0] and listed["has_more"] is False
    assert all(m["type"] == "model" for m in listed["data"])


@pytest.mark.parametrize("stream", [False, True])
async def test_rate_limits_carry_googles_retry_delay(stream: bool, gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    gemini.script(GeminiError(429, retry_delay="7s"), GeminiError(503))
    async with stack(hermetic_env, monkeypatch, gemini) as sc:
        async with client.post(sc.url + "/v1/messages", json={**BODY, "stream": stream}, headers=headers(sc)) as resp:
            assert resp.status == 429
            assert resp.headers["retry-after"] == "7"
            assert resp.headers["content-type"].startswith("application/json")
            limited = await resp.json()
        async with client.post(sc.url + "/v1/messages", json={**BODY, "stream": stream}, headers=headers(sc)) as resp:
            assert resp.status == 503
            overloaded = await resp.json()
    assert limited["error"] == {"type": "rate_limit_error", "message": "You exceeded your current quota, please check your plan and billing details."}
    assert overloaded["error"]["type"] == "overloaded_error"


async def test_without_routes_the_clients_model_goes_to_gemini(gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    gemini.script(Reply((text("from flash"),)))
    async with stack(hermetic_env, monkeypatch, gemini, model=None) as sc:
        async with client.post(sc.url + "/v1/messages", json={**BODY, "model": "gemini-2.5-flash"}, headers=headers(sc)) as resp:
            assert resp.status == 200
            msg = await resp.json()
    assert gemini.requests[0].path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert (msg["model"], msg["content"][0]["text"]) == ("gemini-2.5-flash", "from flash")


async def test_a_request_gemini_cannot_take_is_refused_before_it_is_sent(gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession) -> None:
    body = {**BODY, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "file_011"}}]}]}
    async with stack(hermetic_env, monkeypatch, gemini) as sc:
        async with client.post(sc.url + "/v1/messages", data=json.dumps(body), headers=headers(sc)) as resp:
            assert resp.status == 400
            err = await resp.json()
    assert err["error"]["type"] == "invalid_request_error"
    assert "file ids" in err["error"]["message"]
    assert gemini.requests == []


async def test_a_streamed_tool_loop_keeps_geminis_signature_through_the_history(
    gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two turns with the SDK's stream helper: the fake (like Gemini 3) refuses the second
    unless the first answer's signature comes back on the same function call."""
    tools = [{"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}]
    gemini.script(
        Reply((thought("I should list the files."), call("Bash", {"command": "ls"}))),
        Reply((text("There is one file."),)),
    )
    async with stack(hermetic_env, monkeypatch, gemini) as sc, anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0) as client:
        messages: list[dict[str, Any]] = [{"role": "user", "content": "what is here?"}]
        async with client.messages.stream(model="claude-opus-4-8", max_tokens=100, messages=messages, tools=tools) as s:  # type: ignore[arg-type]
            first = await s.get_final_message()
        assert [b.type for b in first.content] == ["thinking", "tool_use"]
        assert first.stop_reason == "tool_use"
        call_id = first.content[1].id  # type: ignore[union-attr]
        messages += [
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "a.txt"}]},
        ]
        async with client.messages.stream(model="claude-opus-4-8", max_tokens=100, messages=messages, tools=tools) as s:  # type: ignore[arg-type]
            second = await s.get_final_message()
    assert second.content[0].text == "There is one file."  # type: ignore[union-attr]
    replayed = gemini.bodies()[1]["contents"][1]["parts"]
    assert [list(p) for p in replayed] == [["functionCall", "thoughtSignature"]]
    assert gemini.issued[replayed[0]["thoughtSignature"]] == ("call", "Bash")


async def test_a_history_from_another_model_passes_gemini_3s_signature_check(
    gemini: FakeGemini, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch, client: aiohttp.ClientSession
) -> None:
    body = {
        **BODY,
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t", "signature": "EqQBCkYIBxgCKkBclaude"},
                                              {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "ls"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "a.txt"}]},
        ],
    }  # fmt: skip
    async with stack(hermetic_env, monkeypatch, gemini) as sc:
        async with client.post(sc.url + "/v1/messages", json=body, headers=headers(sc)) as resp:
            assert resp.status == 200, await resp.text()
    [sent] = gemini.bodies()
    assert sent["contents"][1]["parts"] == [{"functionCall": {"name": "Bash", "args": {"command": "ls"}}, "thoughtSignature": "skip_thought_signature_validator"}]
