"""The fake OpenAI upstream speaks the real wire format: the official `openai` SDK reads its
completions, its streams (with the stream helper that accumulates tool-call pieces) and its
errors; the SSE framing carries [DONE] and the usage chunk exactly when asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest

from sidecar.protocol.sse import iter_events
from sidecar.testing.fake_openai import Error, FakeOpenAI, Reply, StreamError, ToolCall, Wire

MESSAGES: list[Any] = [{"role": "user", "content": "list the files"}]
CALLS = (ToolCall("Read", {"file_path": "/a/北京.py"}, id="call_a"), ToolCall("Bash", {"command": "ls"}, id="call_b"))


@pytest.fixture
async def upstream() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as f:
        yield f


@pytest.fixture
async def sdk(upstream: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-fake", max_retries=0)
    yield client
    await client.close()


async def test_the_sdk_reads_a_completion(upstream: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    upstream.script(Reply(text="Two files.", reasoning="look first", tool_calls=CALLS, cached_tokens=3, prompt_tokens=10))
    done = await sdk.chat.completions.create(model="gpt-fake-large", messages=MESSAGES)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Two files."
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls or []] == [  # type: ignore[union-attr]
        ("call_a", "Read", '{"file_path": "/a/\\u5317\\u4eac.py"}'),
        ("call_b", "Bash", '{"command": "ls"}'),
    ]
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 3
    assert upstream.requests[0].header("authorization") == "Bearer sk-fake"


@pytest.mark.parametrize(
    "wire",
    [Wire(), Wire(interleave_tool_arguments=True), Wire(split_bytes=3, crlf=True), Wire(content_with_finish=True), Wire(keepalive=True)],
)
async def test_the_sdk_stream_helper_accumulates_the_same_completion(upstream: FakeOpenAI, sdk: openai.AsyncOpenAI, wire: Wire) -> None:
    reply = Reply(text="Two files.", tool_calls=CALLS, wire=wire)
    upstream.script(reply, reply)
    whole = (await sdk.chat.completions.create(model="m", messages=MESSAGES)).choices[0]
    async with sdk.chat.completions.stream(model="m", messages=MESSAGES, stream_options={"include_usage": True}) as stream:
        async for _ in stream:
            pass
        streamed = await stream.get_final_completion()
    got = streamed.choices[0]
    assert got.finish_reason == whole.finish_reason == "tool_calls"
    assert got.message.content == whole.message.content
    assert [(c.id, c.function.name, c.function.arguments) for c in got.message.tool_calls or []] == [
        (c.id, c.function.name, c.function.arguments) for c in whole.message.tool_calls or []  # type: ignore[union-attr]
    ]
    assert streamed.usage is not None and streamed.usage.completion_tokens > 0


@pytest.mark.parametrize("include_usage", [True, False])
async def test_the_usage_chunk_and_done_on_the_wire(upstream: FakeOpenAI, include_usage: bool) -> None:
    body: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with aiohttp.ClientSession() as s, s.post(upstream.base_url + "/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(iter_events(await r.read()))
    assert events[-1].data == "[DONE]"
    chunks = [e.json() for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert usage == [chunks[-1]] and chunks[-1]["choices"] == []
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    else:
        assert usage == []


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
async def test_the_sdk_reads_errors(upstream: FakeOpenAI, sdk: openai.AsyncOpenAI, status: int) -> None:
    upstream.script(Error(status, headers={"retry-after": "2"}))
    with pytest.raises(openai.APIStatusError) as err:
        await sdk.chat.completions.create(model="m", messages=MESSAGES)
    assert err.value.status_code == status
    assert err.value.response.headers["retry-after"] == "2"
    assert isinstance(err.value.body, dict) and err.value.body["message"]


async def test_validate_refuses_like_a_strict_server(sdk: openai.AsyncOpenAI) -> None:
    def no_system(body: dict[str, Any]) -> None:
        if any(m["role"] == "system" for m in body["messages"]):
            raise ValueError("System message must be at the beginning.")

    async with FakeOpenAI(validate=no_system) as strict:
        client = openai.AsyncOpenAI(base_url=strict.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="System message must be at the beginning"):
            await client.chat.completions.create(model="m", messages=[{"role": "system", "content": "s"}, *MESSAGES])
        await client.close()


async def test_a_stream_error_chunk_follows_some_content(upstream: FakeOpenAI) -> None:
    upstream.script(StreamError(after_chunks=2, message="Provider returned error", code=502))
    async with aiohttp.ClientSession() as s, s.post(upstream.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES, "stream": True}) as r:
        events = list(iter_events(await r.read()))
    assert events[-1].json() == {"error": {"message": "Provider returned error", "code": 502}}
    assert len(events) == 3


async def test_a_reset_inside_tool_arguments_breaks_the_sdks_stream(upstream: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    upstream.script(Reply(text=None, tool_calls=CALLS, wire=Wire(cut_in_tool_arguments="reset")))
    with pytest.raises(openai.APIConnectionError):
        stream = await sdk.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass


async def test_models_and_recorded_requests(upstream: FakeOpenAI, sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()
    assert [m.id for m in page.data] == ["gpt-fake-large", "gpt-fake-mini"]
    await sdk.chat.completions.create(model="gpt-fake-mini", messages=MESSAGES, max_completion_tokens=5)
    assert upstream.bodies() == [{"model": "gpt-fake-mini", "messages": MESSAGES, "max_completion_tokens": 5}]
    assert upstream.pending == 0
