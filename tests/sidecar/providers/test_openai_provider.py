"""The openai provider inside a real sidecar, against the fake OpenAI upstream: credentials,
headers, routing to an upstream model, local token counts, model lists, error envelopes,
and an aborted client connection when the upstream stream is cut."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sidecar.providers import tokens
from sidecar.testing import captures
from sidecar.testing.fake_openai import Error, FakeOpenAI, Reply, ToolCall, Wire
from sidecar.testing.harness import InProcessSidecar, sidecar_in_process

BODY = {"model": "claude-opus-4-8", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
CLIENT_KEY = "sk-ant-client-secret"


def openai_config(base_url: str, extra: str = "", ptype: str = "openai", name: str = "openai") -> str:
    """A config whose only provider is an OpenAI-format one at `base_url`."""
    return f'[[providers]]\nname = "{name}"\ntype = "{ptype}"\nbase_url = "{base_url}"\n{extra}'


ROUTED = '\n[[routes]]\nname = "cheap"\nmatch = { model = "*" }\ntargets = [{ provider = "openai", model = "gpt-fake-mini" }]\n'


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


@pytest.fixture
async def sidecar(upstream: FakeOpenAI, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with sidecar_in_process(openai_config(upstream.base_url), hermetic_env) as sc:
        yield sc


async def post(client: aiohttp.ClientSession, sc: InProcessSidecar, body: dict[str, Any], path: str = "/v1/messages",
               key: str = CLIENT_KEY) -> tuple[int, Any, aiohttp.ClientResponse]:  # fmt: skip
    async with client.post(sc.url + path, json=body, headers={"x-api-key": key, "anthropic-version": "2023-06-01"}) as r:
        raw = await r.read()
        return r.status, (json.loads(raw) if r.content_type == "application/json" else raw.decode()), r


async def test_a_whole_answer_is_an_anthropic_message(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    upstream.script(Reply(text="Hi there.", prompt_tokens=20, cached_tokens=5, completion_tokens=3))
    status, msg, resp = await post(client, sidecar, BODY)
    assert status == 200, msg
    assert msg["content"] == [{"type": "text", "text": "Hi there."}]
    assert msg["model"] == "claude-opus-4-8"
    assert msg["usage"] == {"input_tokens": 15, "output_tokens": 3, "cache_read_input_tokens": 5, "cache_creation_input_tokens": 0}
    assert resp.headers["x-sidecar-upstream"] == "openai/claude-opus-4-8"
    [sent] = upstream.bodies()
    assert sent["messages"] == [{"role": "user", "content": "hi"}]
    assert sent["max_completion_tokens"] == 100 and "stream" not in sent


async def test_a_route_picks_the_upstream_model_and_the_client_sees_its_own(
    upstream: FakeOpenAI, hermetic_env: Path, client: aiohttp.ClientSession
) -> None:
    async with sidecar_in_process(openai_config(upstream.base_url, ROUTED), hermetic_env) as sc:
        status, text, resp = await post(client, sc, {**BODY, "stream": True})
    assert status == 200
    assert '"model":"claude-opus-4-8"' in text
    assert resp.headers["x-sidecar-upstream"] == "openai/gpt-fake-mini"
    assert upstream.bodies()[0]["model"] == "gpt-fake-mini"


async def test_the_providers_key_goes_as_bearer_and_the_clients_never(
    upstream: FakeOpenAI, hermetic_env: Path, client: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-openai-provider")
    extra = 'keys = ["env:TEST_OPENAI_KEY"]\nheaders = { "HTTP-Referer" = "https://example.test", "X-Title" = "sidecar" }\n'
    async with sidecar_in_process(openai_config(upstream.base_url, extra), hermetic_env) as sc:
        refused, _, _ = await post(client, sc, BODY)  # the client's Anthropic key is not the local token
        status, _, _ = await post(client, sc, BODY, key=sc.token)
    assert refused == 401 and status == 200
    [req] = upstream.requests
    assert req.header("authorization") == "Bearer sk-openai-provider"
    assert req.header("x-api-key") is None
    assert (req.header("http-referer"), req.header("x-title")) == ("https://example.test", "sidecar")
    assert sc.token not in json.dumps(req.headers)


async def test_without_a_key_no_credential_goes_upstream(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    status, _, _ = await post(client, sidecar, BODY)
    assert status == 200
    [req] = upstream.requests
    assert req.header("authorization") is None and req.header("x-api-key") is None
    assert CLIENT_KEY not in json.dumps(req.headers) and CLIENT_KEY.encode() not in req.body
    assert req.header("anthropic-version") is None


async def test_a_base_url_given_with_the_endpoint_path_still_works(upstream: FakeOpenAI, hermetic_env: Path, client: aiohttp.ClientSession) -> None:
    config = openai_config(upstream.base_url + "/chat/completions", 'preset = "vllm"\n', ptype="openai-compatible", name="local")
    async with sidecar_in_process(config, hermetic_env) as sc:
        status, msg, _ = await post(client, sc, BODY)
    assert status == 200, msg
    assert [r.path for r in upstream.requests] == ["/v1/chat/completions"]


async def test_count_tokens_is_answered_locally(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    body = captures.load("main-turn-opus").data["body"]
    status, counted, resp = await post(client, sidecar, body, path="/v1/messages/count_tokens")
    assert status == 200
    assert counted == {"input_tokens": tokens.count_request(body)}
    assert 15_000 < counted["input_tokens"] < 20_000  # Claude Code's /context says ~17.9k for this body
    assert resp.headers["x-sidecar-token-count"] == "estimate"
    assert upstream.requests == []


async def test_models_are_listed_the_anthropic_way(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    async with client.get(sidecar.url + "/v1/models", headers={"x-api-key": CLIENT_KEY}) as r:
        assert r.status == 200
        page = await r.json()
    assert [m["id"] for m in page["data"]] == ["gpt-fake-large", "gpt-fake-mini"]
    assert page["data"][0]["type"] == "model" and page["first_id"] == "gpt-fake-large"
    assert upstream.requests[0].header("authorization") is None


@pytest.mark.parametrize(
    ("status", "etype"),
    [(400, "invalid_request_error"), (401, "authentication_error"), (404, "not_found_error"),
     (429, "rate_limit_error"), (500, "api_error"), (503, "overloaded_error")],
)  # fmt: skip
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_are_anthropic_envelopes(
    upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession, status: int, etype: str, stream: bool
) -> None:
    upstream.script(Error(status, message=f"upstream says {status}", headers={"retry-after": "7"}))
    got, body, resp = await post(client, sidecar, {**BODY, "stream": stream})
    assert got == status
    assert body == {"type": "error", "error": {"type": etype, "message": f"upstream says {status}"}}
    assert resp.headers["retry-after"] == "7"


async def test_a_request_that_cannot_be_translated_is_a_clear_400(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    body = {**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}
    status, err, _ = await post(client, sidecar, body)
    assert status == 400
    assert err["error"]["type"] == "invalid_request_error"
    assert "Anthropic-defined tool" in err["error"]["message"]
    assert upstream.requests == []


async def test_an_unreadable_answer_is_a_502(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    upstream.script(Reply(text="x", tool_calls=(ToolCall("", "{}"),)))  # a call with no function name
    status, err, _ = await post(client, sidecar, BODY)
    assert status == 502
    assert "cannot be read" in err["error"]["message"]


@pytest.mark.parametrize("cut", ["clean", "reset"])
async def test_a_stream_cut_inside_tool_arguments_aborts_the_client(
    upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession, cut: str
) -> None:
    upstream.script(Reply(text="Running it.", tool_calls=(ToolCall("Bash", {"command": "rm -rf build && make"}),), wire=Wire(cut_in_tool_arguments=cut)))
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.post(sidecar.url + "/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": CLIENT_KEY}) as r:
            assert r.status == 200
            async for chunk in r.content.iter_any():
                received += chunk
    assert b"event: message_stop" not in received
    assert b'"text":"Running"' in received and b'"partial_json"' in received  # relayed as it came


async def test_a_stream_is_relayed_as_it_arrives(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    upstream.script(Reply(text="one two three four five", delay=0.02))
    reads: list[bytes] = []
    async with client.post(sidecar.url + "/v1/messages", json={**BODY, "stream": True}, headers={"x-api-key": CLIENT_KEY}) as r:
        async for chunk in r.content.iter_any():
            reads.append(chunk)
    text = b"".join(reads)
    assert text.count(b"text_delta") == 5 and text.endswith(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
    assert len(reads) > 5  # not buffered into one piece


async def test_the_ledger_meters_translated_usage(upstream: FakeOpenAI, sidecar: InProcessSidecar, client: aiohttp.ClientSession) -> None:
    from sidecar.testing.harness import ledger_rows

    upstream.script(Reply(text="a b c", prompt_tokens=120, cached_tokens=100, completion_tokens=3))
    status, _, _ = await post(client, sidecar, {**BODY, "stream": True})
    assert status == 200
    [row] = await ledger_rows(sidecar)
    assert (row["provider"], row["requested_model"], row["stop_reason"]) == ("openai", "claude-opus-4-8", "end_turn")
    assert (row["input_tokens"], row["cache_read_tokens"], row["output_tokens"]) == (20, 100, 3)
