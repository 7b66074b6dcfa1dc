"""Vertex through a real sidecar to the fake Vertex: rawPredict / streamRawPredict with
service-account tokens, the documented body changes only, betas filtered, errors mapped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import msgspec
import pytest

from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_behaviours import Error, Text, ToolUse
from sidecar.testing.fake_vertex import FakeVertex, clean_google_env, vertex_config
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

MODEL = "claude-opus-4-8@20261001"
BODY: dict[str, Any] = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeVertex]:
    clean_google_env(monkeypatch, tmp_path)
    async with FakeVertex() as f:
        yield f


@pytest.fixture
def creds(fake: FakeVertex, tmp_path: Path) -> Path:
    p = tmp_path / "sa.json"
    p.write_text(json.dumps(fake.service_account_info()))
    return p


@pytest.fixture
async def sc(fake: FakeVertex, creds: Path, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(vertex_config(fake, creds), hermetic_env) as s:
        yield s


async def post(sc: InProcessSidecar, body: dict[str, Any], path: str = "/v1/messages?beta=true", **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(sc.url + path, json=body, headers={"x-api-key": sc.token, **headers}) as r:
        return r.status, dict(r.headers), await r.read()


def predict_path(fake: FakeVertex, model: str, action: str) -> str:
    return f"/v1/projects/{fake.project}/locations/{fake.region}/publishers/anthropic/models/{model}:{action}"


async def test_raw_predict_with_documented_changes_only(fake: FakeVertex, sc: InProcessSidecar) -> None:
    fake.script(Text("Hello from Vertex."))
    beta = "claude-code-20250219,interleaved-thinking-2025-05-14,effort-2025-11-24"
    body = {**BODY, "metadata": {"user_id": "u1"}, "anthropic_beta": ["context-1m-2025-08-07", "oauth-2025-04-20"]}
    status, headers, raw = await post(sc, body, **{"anthropic-beta": beta})
    assert status == 200, raw
    assert msgspec.json.decode(raw)["content"] == [{"type": "text", "text": "Hello from Vertex."}]
    assert headers["x-sidecar-upstream"] == f"vertex/{MODEL}"
    (req,) = fake.requests
    assert req.path == predict_path(fake, MODEL, "rawPredict")
    assert req.json() == {"max_tokens": 50, "messages": BODY["messages"], "metadata": {"user_id": "u1"},
                          "anthropic_beta": ["context-1m-2025-08-07"], "anthropic_version": "vertex-2023-10-16"}  # fmt: skip
    assert req.header("anthropic-beta") == "interleaved-thinking-2025-05-14,context-1m-2025-08-07"
    assert (req.header("authorization") or "").startswith("Bearer ya29.fake-")
    assert req.header("x-api-key") is None
    assert fake.token_requests == 1


async def test_stream_is_passed_through_untouched_and_matches_the_message(fake: FakeVertex, sc: InProcessSidecar) -> None:
    # Fixed usage: the fake's estimate would differ by the `"stream":true` the stream sends.
    reply = ToolUse(name="Bash", input={"command": "ls -la ~/Projets/été"}, text="Running it.", usage={"input_tokens": 321})
    fake.script(reply)
    status, _, raw = await post(sc, {**BODY, "stream": True})
    assert status == 200
    assert sse.PING in raw  # the API's own spelling of ping survives: the bytes were not re-encoded
    fake.script(reply, reply)
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    async with client.messages.stream(model=MODEL, max_tokens=50, messages=BODY["messages"]) as stream:
        streamed = (await stream.get_final_message()).model_dump()
    whole = (await client.messages.create(model=MODEL, max_tokens=50, messages=BODY["messages"])).model_dump()
    for m in (streamed, whole):
        m.pop("id")
        m["content"][1].pop("id")
    assert streamed == whole
    assert fake.requests[-2].path == predict_path(fake, MODEL, "streamRawPredict")
    assert fake.requests[-2].json()["stream"] is True and "model" not in fake.requests[-2].json()
    await client.close()


async def test_count_tokens_keeps_the_model(fake: FakeVertex, sc: InProcessSidecar) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "foo"}]}
    status, _, raw = await post(sc, body, "/v1/messages/count_tokens?beta=true", **{"anthropic-beta": "token-counting-2024-11-01"})
    assert status == 200, raw
    (req,) = fake.requests
    assert req.path == predict_path(fake, "count-tokens", "rawPredict")
    assert req.json() == {**body, "anthropic_version": "vertex-2023-10-16"}
    assert msgspec.json.decode(raw) == {"input_tokens": sse.estimate_tokens(req.body)}


async def test_model_errors_pass_as_sent(fake: FakeVertex, sc: InProcessSidecar) -> None:
    fake.script(Error(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"))
    status, _, raw = await post(sc, BODY)
    assert status == 429
    err = msgspec.json.decode(raw)
    assert err["error"] == {"type": "rate_limit_error", "message": "Number of request tokens has exceeded your per-minute rate limit"}


async def test_google_errors_are_mapped(fake: FakeVertex, creds: Path, hermetic_env: Path) -> None:
    fake.project = "another-project"  # the configured project is now unknown to the fake
    async with sidecar_in_process(vertex_config(fake, creds).replace('project = "another-project"', 'project = "fake-project"'), hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 404
    assert msgspec.json.decode(raw)["error"] == {"type": "not_found_error", "message": "Project fake-project or location us-east5 not found."}


async def test_a_refused_token_is_fetched_again(fake: FakeVertex, sc: InProcessSidecar) -> None:
    assert (await post(sc, BODY))[0] == 200
    fake.issued.clear()  # the token was revoked
    status, _, raw = await post(sc, BODY)
    assert status == 401 and msgspec.json.decode(raw)["error"]["type"] == "authentication_error"
    assert (await post(sc, BODY))[0] == 200
    assert fake.token_requests == 2


async def test_project_from_the_credentials_file(fake: FakeVertex, creds: Path, hermetic_env: Path) -> None:
    async with sidecar_in_process(vertex_config(fake, creds, project=False), hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 200, raw


async def test_authorized_user_credentials(fake: FakeVertex, tmp_path: Path, hermetic_env: Path) -> None:
    p = tmp_path / "adc.json"
    p.write_text(json.dumps(fake.authorized_user_info()))
    async with sidecar_in_process(vertex_config(fake, p, project=False), hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 200, raw


async def test_missing_credentials_is_a_clear_error(fake: FakeVertex, tmp_path: Path, hermetic_env: Path) -> None:
    async with sidecar_in_process(vertex_config(fake, tmp_path / "nope.json"), hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 502
    assert "gcloud auth application-default login" in msgspec.json.decode(raw)["error"]["message"]
    assert fake.requests == []


async def test_a_configured_key_is_used_as_the_access_token(fake: FakeVertex, creds: Path, hermetic_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.issued.add("ya29.static-token")
    monkeypatch.setenv("CLAUDE_SIDECAR_VERTEX_API_KEY", "ya29.static-token")
    async with sidecar_in_process(vertex_config(fake, creds), hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 200, raw
    assert fake.requests[0].header("authorization") == "Bearer ya29.static-token" and fake.token_requests == 0
