"""Bedrock through a real sidecar to the fake Bedrock: InvokeModel for Claude, SigV4 or API
keys, event-stream re-encoded as SSE, errors and broken streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import msgspec
import pytest

from sidecar.errors import ConfigError
from sidecar.testing import anthropic_sse as sse
from sidecar.testing.fake_bedrock import (
    AwsError,
    AwsKeys,
    CorruptFrame,
    CutFrame,
    FakeBedrock,
    StreamException,
    bedrock_sidecar,
    clean_aws_env,
)
from sidecar.testing.fake_behaviours import Text, ToolUse
from sidecar.testing.harness import InProcessSidecar

CLAUDE = "us.anthropic.claude-opus-4-8-v1:0"
BODY: dict[str, Any] = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeBedrock]:
    keys = AwsKeys()
    clean_aws_env(monkeypatch, tmp_path, keys)
    async with FakeBedrock(keys=keys, split=7) as f:
        yield f


@pytest.fixture
async def sc(fake: FakeBedrock, hermetic_env: Path) -> AsyncIterator[InProcessSidecar]:
    async with bedrock_sidecar(fake, hermetic_env) as s:
        yield s


async def post(sc: InProcessSidecar, body: dict[str, Any], path: str = "/v1/messages?beta=true", **headers: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as s, s.post(sc.url + path, json=body, headers={"x-api-key": sc.token, **headers}) as r:
        return r.status, dict(r.headers), await r.read()


async def test_non_streaming_invoke_passes_the_message_through(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(Text("Hello from Bedrock."))
    status, headers, raw = await post(sc, {**BODY, "temperature": 0.5}, **{"anthropic-beta": "interleaved-thinking-2025-05-14,claude-code-20250219"})
    assert status == 200, raw
    msg = msgspec.json.decode(raw)
    assert msg["content"] == [{"type": "text", "text": "Hello from Bedrock."}] and msg["stop_reason"] == "end_turn"
    assert headers["x-sidecar-upstream"] == f"bedrock/{CLAUDE}"
    (req,) = fake.requests
    assert req.path == "/model/us.anthropic.claude-opus-4-8-v1%3A0/invoke"
    assert req.json() == {"max_tokens": 100, "messages": BODY["messages"], "temperature": 0.5,
                          "anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["interleaved-thinking-2025-05-14"]}  # fmt: skip
    assert (req.header("Authorization") or "").startswith("AWS4-HMAC-SHA256 Credential=AKIAFAKEFAKEFAKE1234/")
    assert req.header("anthropic-beta") is None and req.header("x-api-key") is None


async def test_streaming_invoke_reaches_the_sdk_like_the_message(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    client = anthropic.AsyncAnthropic(base_url=sc.url, api_key=sc.token, max_retries=0)
    reply = ToolUse(name="Read", input={"file_path": "/tmp/a — ü.py"}, text="Let me look.", chunks=4)
    fake.script(reply, reply)
    async with client.messages.stream(model=CLAUDE, max_tokens=100, messages=BODY["messages"]) as stream:
        streamed = await stream.get_final_message()
    whole = await client.messages.create(model=CLAUDE, max_tokens=100, messages=BODY["messages"])
    a, b = streamed.model_dump(), whole.model_dump()
    for m in (a, b):
        m.pop("id")
        for block in m["content"]:
            block.pop("id", None)
    assert a == b
    assert streamed.content[1].input == {"file_path": "/tmp/a — ü.py"}  # type: ignore[union-attr]
    assert [r.path.rsplit("/", 1)[1] for r in fake.requests] == ["invoke-with-response-stream", "invoke"]
    assert "stream" not in fake.requests[0].json()
    await client.close()


async def test_stream_events_are_the_upstream_events(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(Text("one two three", thinking="hmm, think"))
    status, headers, raw = await post(sc, {**BODY, "stream": True})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = sse.sse_events(raw)
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" not in names  # Bedrock sends none, and none is invented
    assert events[-1][1] == {"type": "message_stop"}  # Bedrock's invocation metrics are removed
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert {"type": "signature_delta", "signature": sse.fake_signature("hmm, think")} in deltas
    assert "".join(d.get("text", "") for d in deltas) == "one two three"


async def test_model_arns_are_encoded_and_signed(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/claude-x1"
    status, _, raw = await post(sc, {**BODY, "model": arn})
    assert status == 200, raw
    assert fake.requests[0].path == "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aapplication-inference-profile%2Fclaude-x1/invoke"
    assert fake.auth_failures == []


async def test_throttling_is_a_rate_limit_error(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(AwsError(429, "ThrottlingException", "Too many tokens, please wait before trying again."))
    status, _, raw = await post(sc, {**BODY, "stream": True})
    assert status == 429
    assert msgspec.json.decode(raw) == {"type": "error", "error": {"type": "rate_limit_error", "message": "Too many tokens, please wait before trying again."}}


@pytest.mark.parametrize(
    ("status", "code", "want_status", "want_type"),
    [
        (400, "ValidationException", 400, "invalid_request_error"),
        (403, "AccessDeniedException", 403, "permission_error"),
        (404, "ResourceNotFoundException", 404, "not_found_error"),
        (424, "ModelErrorException", 500, "api_error"),
        (408, "ModelTimeoutException", 504, "timeout_error"),
        (503, "ServiceUnavailableException", 529, "overloaded_error"),
        (500, "InternalServerException", 500, "api_error"),
    ],
)
async def test_errors_map_to_anthropic_envelopes(fake: FakeBedrock, sc: InProcessSidecar, status: int, code: str, want_status: int, want_type: str) -> None:
    fake.script(AwsError(status, code, f"message of {code}"))
    got_status, _, raw = await post(sc, BODY)
    assert (got_status, msgspec.json.decode(raw)["error"]) == (want_status, {"type": want_type, "message": f"message of {code}"})


async def test_an_exception_before_any_event_is_an_ordinary_error(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(StreamException(after_events=0, code="throttlingException", message="Rate exceeded"))
    status, headers, raw = await post(sc, {**BODY, "stream": True})
    assert status == 429 and headers["Content-Type"].startswith("application/json")
    assert msgspec.json.decode(raw)["error"] == {"type": "rate_limit_error", "message": "Rate exceeded"}


async def test_an_exception_mid_stream_is_an_error_event(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.script(StreamException(after_events=3, code="modelStreamErrorException", message="Model stream broke"))
    status, _, raw = await post(sc, {**BODY, "stream": True})
    assert status == 200
    events = sse.sse_events(raw)
    assert len(events) == 4 and events[-1] == ("error", {"type": "error", "error": {"type": "api_error", "message": "Model stream broke"}})


@pytest.mark.parametrize("behaviour", [CutFrame(after_events=3), CorruptFrame(after_events=3)], ids=["cut", "corrupt"])
async def test_a_broken_event_stream_aborts_the_client(fake: FakeBedrock, sc: InProcessSidecar, behaviour: Any) -> None:
    fake.script(behaviour)
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(sc, {**BODY, "stream": True})


async def test_a_wrong_secret_is_refused_by_signature(monkeypatch: pytest.MonkeyPatch, fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.keys = AwsKeys(secret_access_key="another secret entirely")
    status, _, raw = await post(sc, BODY)
    assert status == 401
    assert msgspec.json.decode(raw)["error"]["type"] == "authentication_error"
    assert fake.auth_failures[0].startswith("The request signature we calculated does not match")


async def test_temporary_credentials_send_their_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hermetic_env: Path) -> None:
    keys = AwsKeys("ASIATEMPORARY0000001", "temp-secret", "IQoJb3JpZ2luX2VjEJr//////////token")
    clean_aws_env(monkeypatch, tmp_path, keys)
    async with FakeBedrock(keys=keys) as fake, bedrock_sidecar(fake, hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
        assert status == 200, raw
        assert fake.requests[0].header("X-Amz-Security-Token") == keys.session_token


async def test_profile_from_the_shared_credentials_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hermetic_env: Path) -> None:
    clean_aws_env(monkeypatch, tmp_path, None)
    creds = tmp_path / "credentials"
    creds.write_text("[dev]\naws_access_key_id = AKIAPROFILE000000001\naws_secret_access_key = profile-secret\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    async with FakeBedrock(keys=AwsKeys("AKIAPROFILE000000001", "profile-secret")) as fake, bedrock_sidecar(fake, hermetic_env, 'profile = "dev"\n') as sc:
        status, _, raw = await post(sc, BODY)
        assert status == 200, raw


@pytest.mark.parametrize("source", ["env", "configured"])
async def test_bedrock_api_keys_are_bearer_tokens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hermetic_env: Path, source: str) -> None:
    clean_aws_env(monkeypatch, tmp_path, None)
    if source == "env":
        monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "ABSKbedrock-api-key-1")
    else:
        monkeypatch.setenv("CLAUDE_SIDECAR_BEDROCK_API_KEY", "ABSKbedrock-api-key-1")
    async with FakeBedrock(api_key="ABSKbedrock-api-key-1") as fake, bedrock_sidecar(fake, hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
        assert status == 200, raw
        assert fake.requests[0].header("Authorization") == "Bearer ABSKbedrock-api-key-1"


async def test_no_credentials_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, hermetic_env: Path) -> None:
    clean_aws_env(monkeypatch, tmp_path, None)
    async with FakeBedrock() as fake, bedrock_sidecar(fake, hermetic_env) as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 502
    assert "no AWS credentials found" in msgspec.json.decode(raw)["error"]["message"]
    assert fake.requests == []


async def test_count_tokens_uses_the_counttokens_api(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": "count me"}], "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}]}
    status, _, raw = await post(sc, body, "/v1/messages/count_tokens?beta=true", **{"anthropic-beta": "token-counting-2024-11-01"})
    assert status == 200, raw
    (req,) = fake.requests
    assert req.path == "/model/us.anthropic.claude-opus-4-8-v1%3A0/count-tokens"
    import base64

    inner = base64.b64decode(req.json()["input"]["invokeModel"]["body"])
    assert msgspec.json.decode(raw) == {"input_tokens": sse.estimate_tokens(inner)}
    assert msgspec.json.decode(inner) == {"messages": body["messages"], "tools": body["tools"], "anthropic_version": "bedrock-2023-05-31", "max_tokens": 1}


async def test_count_tokens_falls_back_to_a_local_estimate(fake: FakeBedrock, sc: InProcessSidecar) -> None:
    fake.counts_tokens = False
    body = {"model": CLAUDE, "messages": [{"role": "user", "content": "count me, please"}]}
    status, headers, raw = await post(sc, body, "/v1/messages/count_tokens")
    assert status == 200, raw
    assert headers["x-sidecar-token-count"] == "estimate"
    n = msgspec.json.decode(raw)["input_tokens"]
    assert 4 <= n <= 40
    assert len(fake.requests) == 1  # the refused count, and no billable call after it


async def test_other_endpoints_are_not_found(sc: InProcessSidecar) -> None:
    async with aiohttp.ClientSession() as s, s.get(sc.url + "/v1/models", headers={"x-api-key": sc.token}) as r:
        assert r.status == 404
        assert (await r.json())["error"]["type"] == "not_found_error"


@pytest.mark.parametrize("split", [1, 3, 17, 4096])
async def test_frames_split_anywhere_give_the_same_events(fake: FakeBedrock, sc: InProcessSidecar, split: int) -> None:
    reply = ToolUse(name="Edit", input={"old": "é", "new": "北京"}, text="Editing ünïcode.", chunks=6, id="toolu_fixed")
    fake.split = None
    fake.script(reply)
    _, _, whole = await post(sc, {**BODY, "stream": True})
    fake.split = split
    fake.script(reply)
    _, _, pieces = await post(sc, {**BODY, "stream": True})

    def normal(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
        events = sse.sse_events(raw)
        events[0][1]["message"]["id"] = "msg"
        return events

    assert normal(pieces) == normal(whole)


async def test_an_unknown_api_option_is_a_clear_error(fake: FakeBedrock, hermetic_env: Path) -> None:
    with pytest.raises(ConfigError) as e:
        async with bedrock_sidecar(fake, hermetic_env, 'api = "chat"\n'):
            pass
    assert "providers[0].api: 'chat' is not one of: auto, invoke, converse" in e.value.message
    assert fake.requests == []


async def test_api_converse_sends_claude_through_converse(fake: FakeBedrock, hermetic_env: Path) -> None:
    async with bedrock_sidecar(fake, hermetic_env, 'api = "converse"\n') as sc:
        status, _, raw = await post(sc, BODY)
    assert status == 200, raw
    assert fake.requests[0].path.endswith("/converse")
    assert msgspec.json.decode(raw)["model"] == CLAUDE
