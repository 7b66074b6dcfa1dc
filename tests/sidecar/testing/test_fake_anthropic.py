"""The fake Anthropic upstream speaks the real wire format and does what it is scripted to do."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import aiohttp
import anthropic
import pytest
from multidict import CIMultiDictProxy

from sidecar.testing.anthropic_sse import SSE_CONTENT_TYPE, split_words, sse_events
from sidecar.testing.fake_anthropic import (
    DEFAULT_TEXT,
    KINDS,
    Behaviour,
    Cut,
    Error,
    FakeAnthropic,
    FakeAnthropicProcess,
    StallBeforeHeaders,
    StallMidStream,
    StreamError,
    Text,
    ToolUse,
    behaviour_from_json,
    behaviour_to_json,
)
from sidecar.testing.fake_anthropic import main as fake_main

MESSAGES = "/v1/messages?beta=true"




def request_body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test-1",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


async def post(
    client: aiohttp.ClientSession, fake: FakeAnthropic, stream: bool = True, **extra: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with client.post(fake.url + MESSAGES, json=request_body(stream, **extra)) as resp:
        return resp.status, resp.headers, await resp.read()


def names(events: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [name for name, _ in events]


def deltas(events: list[tuple[str, dict[str, Any]]], kind: str, key: str) -> list[str]:
    return [
        d["delta"][key]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == kind
    ]


# ------------------------------------------------------------------ text


async def test_default_text_reply_streams_in_the_api_event_order(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    status, headers, raw = await post(client, fake)
    assert status == 200
    assert headers["Content-Type"] == SSE_CONTENT_TYPE
    assert headers["request-id"].startswith("req_")
    assert "anthropic-organization-id" in headers
    assert int(headers["anthropic-ratelimit-requests-limit"]) > 0
    assert headers["anthropic-ratelimit-tokens-reset"].endswith("Z")
    events = sse_events(raw)
    n_words = len(split_words(DEFAULT_TEXT))
    assert names(events) == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * n_words,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert raw.startswith(b"event: message_start\ndata: {")
    assert b'event: ping\ndata: {"type": "ping"}\n\n' in raw
    message = events[0][1]["message"]
    assert message["id"].startswith("msg_")
    assert message["model"] == "claude-test-1"
    assert (message["content"], message["stop_reason"], message["stop_sequence"]) == (
        [],
        None,
        None,
    )
    body_len = len(fake.requests[0].body)
    assert message["usage"] == {
        "input_tokens": body_len // 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 1,
        "service_tier": "standard",
    }
    assert "".join(deltas(events, "text_delta", "text")) == DEFAULT_TEXT
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == len(DEFAULT_TEXT.split())
    assert delta["usage"]["input_tokens"] == body_len // 4


async def test_non_streaming_text_reply_is_one_message(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("one two three"))
    status, headers, raw = await post(client, fake, stream=False)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    message = json.loads(raw)
    assert message["type"] == "message"
    assert message["content"] == [{"type": "text", "text": "one two three"}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == 3


async def test_chunks_and_bench_set_the_number_of_deltas(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("abcdefghij", chunks=4), Text.bench(50))
    events = sse_events((await post(client, fake))[2])
    assert deltas(events, "text_delta", "text") == ["ab", "cde", "fg", "hij"]
    events = sse_events((await post(client, fake))[2])
    assert len(deltas(events, "text_delta", "text")) == 50


async def test_overrides_of_model_usage_and_stop_reason(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    usage = {"input_tokens": 7, "output_tokens": 9, "cache_read_input_tokens": 5}
    fake.script(Text(model="claude-other", usage=usage, stop_reason="max_tokens"))
    events = sse_events((await post(client, fake))[2])
    start = events[0][1]["message"]
    assert start["model"] == "claude-other"
    assert start["usage"]["input_tokens"] == 7
    assert start["usage"]["cache_read_input_tokens"] == 5
    final = events[-2][1]
    assert final["delta"]["stop_reason"] == "max_tokens"
    assert final["usage"] == {
        "input_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 5,
        "output_tokens": 9,
    }


async def test_thinking_block_comes_first_with_a_signature(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("answer", thinking="let me think"))
    events = sse_events((await post(client, fake))[2])
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    assert names(events).count("ping") == 1
    assert "".join(deltas(events, "thinking_delta", "thinking")) == "let me think"
    assert len(deltas(events, "signature_delta", "signature")) == 1


# ------------------------------------------------------------------ tool use


async def test_tool_use_streams_input_json_in_pieces(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    tool_input = {"command": "ls -la", "timeout": 30}
    fake.script(ToolUse("Bash", tool_input, text="Running it.", chunks=4))
    events = sse_events((await post(client, fake))[2])
    blocks = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert blocks[0] == {"type": "text", "text": ""}
    assert blocks[1]["type"] == "tool_use"
    assert blocks[1]["id"].startswith("toolu_")
    assert (blocks[1]["name"], blocks[1]["input"]) == ("Bash", {})
    pieces = deltas(events, "input_json_delta", "partial_json")
    assert len(pieces) == 5  # the API's leading "" and then 4 pieces
    assert json.loads("".join(pieces)) == tool_input
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"

    fake.script(ToolUse("Bash", tool_input, id="toolu_fixed"))
    message = json.loads((await post(client, fake, stream=False))[2])
    assert message["content"] == [
        {"type": "tool_use", "id": "toolu_fixed", "name": "Bash", "input": tool_input}
    ]
    assert message["stop_reason"] == "tool_use"


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (529, "overloaded_error"),
    ],
)
async def test_error_sends_the_api_envelope(
    fake: FakeAnthropic, client: aiohttp.ClientSession, status: int, error_type: str
) -> None:
    fake.script(Error(status))
    got_status, headers, raw = await post(client, fake)
    assert got_status == status
    body = json.loads(raw)
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]
    assert body["request_id"] == headers["request-id"]
    assert "x-should-retry" not in headers


async def test_error_with_message_headers_and_should_retry(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Error(429, message="slow down", headers={"retry-after": "1"}, should_retry=True))
    status, headers, raw = await post(client, fake, stream=False)
    assert status == 429
    assert json.loads(raw)["error"] == {"type": "rate_limit_error", "message": "slow down"}
    assert headers["retry-after"] == "1"
    assert headers["x-should-retry"] == "true"


async def test_invalid_json_is_a_400_and_keeps_the_queue(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("kept"))
    async with client.post(fake.url + MESSAGES, data=b"{not json") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert fake.pending == 1
    assert fake.requests[0].body == b"{not json"


async def test_stream_error_after_message_start(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(StreamError(), StreamError())
    status, _, raw = await post(client, fake)
    assert status == 200
    events = sse_events(raw)
    assert names(events) == ["message_start", "error"]
    assert events[1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    status, _, raw = await post(client, fake, stream=False)
    assert status == 529
    assert json.loads(raw)["error"]["type"] == "overloaded_error"


# ------------------------------------------------------------------ stalls and cuts


async def test_stall_before_headers_then_the_nested_behaviour(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(StallBeforeHeaders(0.2, then=Error(500)))
    started = time.monotonic()
    status, _, _ = await post(client, fake)
    assert time.monotonic() - started >= 0.2
    assert status == 500


async def test_stall_mid_stream_pauses_between_events(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(StallMidStream(after_events=2, seconds=0.3))
    arrivals: list[tuple[float, bytes]] = []
    async with client.post(fake.url + MESSAGES, json=request_body()) as resp:
        buf = b""
        async for chunk in resp.content.iter_any():
            buf += chunk
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                arrivals.append((time.monotonic(), event))
    assert len(arrivals) == len(split_words(DEFAULT_TEXT)) + 6
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert gaps[1] >= 0.25  # between event 2 and event 3
    assert max(gaps[:1] + gaps[2:]) < 0.2


async def test_stall_mid_stream_non_streaming_still_completes(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(StallMidStream(seconds=0.1))
    status, _, raw = await post(client, fake, stream=False)
    assert status == 200
    assert json.loads(raw)["content"][0]["text"] == DEFAULT_TEXT


async def test_delay_between_events(fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    fake.script(Text("a b c", delay_between_events=0.02))
    started = time.monotonic()
    await post(client, fake)
    assert time.monotonic() - started >= 0.02 * 8


async def test_cut_streaming_is_an_error_never_a_clean_end(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Cut(after_events=4))
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async with client.post(fake.url + MESSAGES, json=request_body()) as resp:
            assert resp.status == 200
            async for chunk in resp.content.iter_any():
                received += chunk
    assert len(sse_events(received)) == 4
    assert b"message_stop" not in received


async def test_cut_after_every_event_still_has_no_clean_end(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Cut(after_events=100))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(client, fake)


async def test_cut_with_a_clean_end_truncates_the_stream(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Cut(after_events=5, clean_end=True))
    status, _, raw = await post(client, fake)
    assert status == 200
    assert len(sse_events(raw)) == 5


async def test_a_stalled_request_the_client_gave_up_on_does_not_hold_up_close(
    client: aiohttp.ClientSession,
) -> None:
    fake = FakeAnthropic()
    await fake.start()
    fake.script(StallBeforeHeaders(30))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await post(client, fake)
    started = time.monotonic()
    await fake.close()
    assert time.monotonic() - started < 1


async def test_cut_non_streaming_body_is_an_error(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Cut(after_bytes=20, reply=ToolUse()))
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(client, fake, stream=False)


# ------------------------------------------------------------------ other endpoints and recording


async def test_count_tokens_models_and_head(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "foo"}]})
    async with client.post(fake.url + "/v1/messages/count_tokens?beta=true", data=body) as resp:
        assert await resp.json() == {"input_tokens": len(body) // 4}
    async with client.get(fake.url + "/v1/models") as resp:
        models = await resp.json()
    assert models["has_more"] is False
    assert models["first_id"] == models["data"][0]["id"]
    assert models["last_id"] == models["data"][-1]["id"]
    assert set(models["data"][0]) == {"type", "id", "display_name", "created_at"}
    async with client.head(fake.url + "/") as resp:
        assert resp.status == 200
    assert [r.path for r in fake.requests] == ["/v1/messages/count_tokens"]


async def test_requests_are_recorded_as_received(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    headers = {"X-Api-Key": "sk-test", "anthropic-version": "2023-06-01", "X-Custom": "a"}
    body = json.dumps(request_body()).encode()
    async with client.post(fake.url + MESSAGES, data=body, headers=headers) as resp:
        await resp.read()
    (recorded,) = fake.requests
    assert (recorded.method, recorded.path, recorded.query_string) == (
        "POST",
        "/v1/messages",
        "beta=true",
    )
    assert recorded.body == body
    assert recorded.json()["model"] == "claude-test-1"
    sent = [(k, v) for k, v in recorded.headers if k in headers]
    assert sent == list(headers.items())
    assert recorded.header("x-api-key") == "sk-test"
    fake.reset()
    assert fake.requests == []


# ------------------------------------------------------------------ the anthropic SDK


@pytest.mark.parametrize(
    "behaviour",
    [
        Text("Hello there, friend."),
        ToolUse("get_weather", {"location": "Paris", "unit": "c"}, text="Checking.", id="toolu_1"),
        Text("The answer is 4.", thinking="2 plus 2 is 4."),
    ],
    ids=["text", "tool_use", "thinking"],
)
async def test_the_sdk_reads_streams_like_non_streaming_replies(
    fake: FakeAnthropic, behaviour: Behaviour
) -> None:
    fake.script(behaviour, behaviour)
    kwargs: dict[str, Any] = {
        "model": "claude-test-1",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-test", max_retries=0) as c:
        async with c.messages.stream(**kwargs) as stream:
            streamed = await stream.get_final_message()
        whole = await c.messages.create(**kwargs)

    def dump(content: list[Any]) -> list[dict[str, Any]]:
        return [b.model_dump(exclude={"parsed_output"}) for b in content]

    assert dump(streamed.content) == dump(whole.content)
    assert streamed.stop_reason == whole.stop_reason
    assert streamed.usage.output_tokens == whole.usage.output_tokens
    assert streamed.model == "claude-test-1"


async def test_the_sdk_raises_on_a_cut_stream(fake: FakeAnthropic) -> None:
    fake.script(Cut(after_events=3))
    async with anthropic.AsyncAnthropic(base_url=fake.url, api_key="sk-test", max_retries=0) as c:
        try:
            async with c.messages.stream(
                model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                await stream.get_final_message()
        except anthropic.APIConnectionError:
            pass
        except Exception as e:  # the SDK lets its HTTP client's read error through mid-stream
            assert type(e).__name__ == "ReadError", repr(e)
        else:
            pytest.fail("a cut stream ended cleanly")


# ------------------------------------------------------------------ JSON form and child process


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_behaviours_round_trip_through_json(kind: str) -> None:
    behaviour = KINDS[kind]()
    assert behaviour_from_json(json.loads(json.dumps(behaviour_to_json(behaviour)))) == behaviour


def test_nested_behaviours_from_json() -> None:
    got = behaviour_from_json(
        {"kind": "stall_before_headers", "seconds": 2, "then": {"kind": "error", "status": 429}}
    )
    assert got == StallBeforeHeaders(2, then=Error(429))
    with pytest.raises(ValueError, match="unknown behaviour kind"):
        behaviour_from_json({"kind": "nope"})
    with pytest.raises(ValueError, match="reply must be"):
        behaviour_from_json({"kind": "cut", "reply": {"kind": "error"}})


def test_sse_events_parses_crlf_comments_and_multiline_data() -> None:
    raw = b': comment\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata: {"y": 2}\n\n'
    assert sse_events(raw) == [("a", {"x": 1}), ("message", {"y": 2})]


async def test_child_process_is_scripted_and_inspected_over_http(
    client: aiohttp.ClientSession,
) -> None:
    async with FakeAnthropicProcess() as child:
        assert child.url.startswith("http://127.0.0.1:")
        await child.script(Text("from the child"), Error(503))
        async with client.post(child.url + MESSAGES, json=request_body(False)) as resp:
            assert (await resp.json())["content"][0]["text"] == "from the child"
        async with client.post(child.url + MESSAGES, json=request_body()) as resp:
            assert resp.status == 503
        (first, second) = await child.requests()
        assert first.path == "/v1/messages"
        assert first.json() == request_body(False)
        assert second.json()["stream"] is True
        assert ("Content-Type", "application/json") in first.headers
        async with client.get(child.url + "/__fake/requests") as resp:
            raw = (await resp.json())[1]
        assert raw["body_text"] == json.dumps(request_body())
        assert raw["query_string"] == "beta=true"
        async with client.post(child.url + "/__fake/script", json=[{"kind": "bad"}]) as resp:
            assert resp.status == 400
        await child.set_default(Text("new default"))
        await child.reset()
        assert await child.requests() == []
        async with client.post(child.url + MESSAGES, json=request_body(False)) as resp:
            assert (await resp.json())["content"][0]["text"] == "new default"


async def test_queue_pops_in_order_then_falls_back_to_the_default(
    fake: FakeAnthropic, client: aiohttp.ClientSession
) -> None:
    fake.script(Text("first"))
    fake.enqueue(Text("second"))
    texts = []
    for _ in range(3):
        raw = (await post(client, fake, stream=False))[2]
        texts.append(json.loads(raw)["content"][0]["text"])
    assert texts == ["first", "second", DEFAULT_TEXT]
    assert fake.pending == 0


async def test_concurrent_streams(fake: FakeAnthropic, client: aiohttp.ClientSession) -> None:
    fake.default = Text.bench(20)
    results = await asyncio.gather(*(post(client, fake) for _ in range(10)))
    assert all(names(sse_events(raw))[-1] == "message_stop" for _, _, raw in results)


def test_help_names_every_control_endpoint(capsys: pytest.CaptureFixture[str]) -> None:
    """Someone trying the sidecar offline learns from --help how to script the fake."""
    control = {
        (r.method, r.resource.canonical)  # type: ignore[union-attr]
        for r in FakeAnthropic().app.router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/__fake/")
    }
    assert len(control) >= 4

    with pytest.raises(SystemExit) as exited:
        fake_main(["--help"])

    assert exited.value.code == 0
    out = capsys.readouterr().out
    for method, path in control:
        assert f"{method} {path}" in " ".join(out.split())
    for kind in KINDS:
        assert kind in out
