"""The fake Gemini API itself: it must answer and refuse the way Gemini does, or the
conformance suite would prove nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest

from sidecar.protocol.sse import iter_events
from sidecar.testing.fake_gemini import (
    FakeGemini,
    Quirks,
    Reply,
    call,
    new_signature,
    text,
    thought,
)

KEY = "k-123"
URL = "/v1beta/models/gemini-3-pro-preview:"
BODY: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as f:
        yield f


async def post(client: aiohttp.ClientSession, fake: FakeGemini, action: str, body: Any, key: str | None = KEY) -> tuple[int, Any]:
    headers = {"x-goog-api-key": key} if key else {}
    async with client.post(fake.url + URL + action, json=body, headers=headers) as resp:
        raw = await resp.read()
        return resp.status, raw if resp.content_type == "text/event-stream" else msgspec.json.decode(raw)


async def test_keys(fake: FakeGemini, client: aiohttp.ClientSession) -> None:
    status, body = await post(client, fake, "generateContent", BODY, key=None)
    assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED")
    status, body = await post(client, fake, "generateContent", BODY, key="nope")
    assert (status, body["error"]["message"]) == (400, "API key not valid. Please pass a valid API key.")
    assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "user", "parts": [{"text": "b"}]}]}, "alternate between user and model"),
        ({**BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {}}}]}]}, "should be non-empty for OBJECT type"),
        ({**BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "string"}}}}]}]}, 'Unknown name "additionalProperties"'),
        ({**BODY, "tools": [{"functionDeclarations": [{"name": "f", "parameters": {"type": "OBJECT", "properties": {"u": {"type": "STRING", "format": "uri"}}}}]}]}, "format"),
        ({**BODY, "tools": [{"functionDeclarations": [{"name": "x" * 65}]}]}, "Invalid function name"),
        ({"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]}, {"role": "user", "parts": [{"text": "b"}]}]},
         "number of function response parts"),
        ({"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}, "function response turn comes immediately after a function call turn"),
        ({"contents": [{"role": "user", "parts": [{"text": ""}]}]}, "empty text parameter"),
        ({**BODY, "generationConfig": {"thinkingConfig": {"thinkingBudget": 10, "thinkingLevel": "low"}}}, "not supported together"),
        ({**BODY, "system": "x"}, 'Unknown name "system"'),
    ],
)  # fmt: skip
async def test_requests_gemini_refuses(fake: FakeGemini, client: aiohttp.ClientSession, body: dict[str, Any], words: str) -> None:
    status, err = await post(client, fake, "generateContent", body)
    assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT"
    assert words in err["error"]["message"]


async def test_signatures_are_issued_and_checked_like_gemini_3(fake: FakeGemini, client: aiohttp.ClientSession) -> None:
    fake.script(Reply((call("f", {"a": 1}),)))
    status, first = await post(client, fake, "generateContent", BODY)
    assert status == 200
    part = first["candidates"][0]["content"]["parts"][0]
    assert fake.issued == {part["thoughtSignature"]: ("call", "f")}

    def history(model_part: dict[str, Any]) -> dict[str, Any]:
        return {"contents": [BODY["contents"][0], {"role": "model", "parts": [model_part]}, {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"output": "1"}}}]}]}

    assert (await post(client, fake, "generateContent", history(part)))[0] == 200
    status, err = await post(client, fake, "generateContent", history({"functionCall": part["functionCall"]}))
    assert status == 400 and "missing a thought_signature" in err["error"]["message"] and "position 1" in err["error"]["message"]
    status, err = await post(client, fake, "generateContent", history({**part, "thoughtSignature": new_signature()}))
    assert (status, err["error"]["message"]) == (400, "Corrupted thought signature.")
    moved = {"contents": [BODY["contents"][0], {"role": "model", "parts": [{"text": "x", "thoughtSignature": part["thoughtSignature"]}]}, {"role": "user", "parts": [{"text": "y"}]}]}
    assert (await post(client, fake, "generateContent", moved))[1]["error"]["message"] == "Corrupted thought signature."
    skip = {**part, "thoughtSignature": "skip_thought_signature_validator"}
    assert (await post(client, fake, "generateContent", history(skip)))[0] == 200


async def test_a_stream_is_whole_responses_in_data_events(fake: FakeGemini, client: aiohttp.ClientSession) -> None:
    reply = Reply((thought("plan it out first"), text("one two three four five"), call("f", {"a": 1}), call("g", {})), usage={"cachedContentTokenCount": 3}, quirks=Quirks(crlf=True))
    fake.script(reply, reply)
    status, raw = await post(client, fake, "streamGenerateContent?alt=sse", BODY)
    assert status == 200 and b"\r\n\r\n" in raw
    chunks = [ev.json() for ev in iter_events(raw)]
    parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
    assert "".join(p["text"] for p in parts if "text" in p and not p.get("thought")) == "one two three four five"
    assert [p["functionCall"]["name"] for p in parts if "functionCall" in p] == ["f", "g"]
    assert [len(c["candidates"][0]["content"]["parts"]) for c in chunks][-1] == 2  # parallel calls together
    assert [c["candidates"][0].get("finishReason") for c in chunks] == [None] * (len(chunks) - 1) + ["STOP"]
    last = chunks[-1]["usageMetadata"]
    assert last["cachedContentTokenCount"] == 3 and last["promptTokenCount"] >= 3
    assert last["totalTokenCount"] == last["promptTokenCount"] + last["candidatesTokenCount"] + last["thoughtsTokenCount"]
    status, whole = await post(client, fake, "generateContent", BODY)
    assert [list(p) for p in whole["candidates"][0]["content"]["parts"]] == [["text", "thought"], ["text"], ["functionCall", "thoughtSignature"], ["functionCall"]]


async def test_count_models_and_unknown_models(client: aiohttp.ClientSession) -> None:
    async with FakeGemini(api_key=KEY, known_models=("gemini-2.5-pro",)) as fake:
        status, err = await post(client, fake, "generateContent", BODY)
        assert status == 404 and "models/gemini-3-pro-preview is not found for API version v1beta" in err["error"]["message"]
        async with client.post(fake.url + "/v1beta/models/gemini-2.5-pro:countTokens", json=BODY, headers={"x-goog-api-key": KEY}) as resp:
            assert resp.status == 200
            assert (await resp.json())["totalTokens"] > 0
        async with client.get(fake.url + "/v1beta/models", headers={"x-goog-api-key": KEY}) as resp:
            listed = await resp.json()
        assert [m["name"] for m in listed["models"]] == ["models/gemini-2.5-pro", "models/text-embedding-004"]
