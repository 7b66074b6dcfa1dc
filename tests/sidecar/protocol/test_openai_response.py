"""Chat Completions answers as Anthropic messages: content order, stop reasons, usage with
cached tokens, tolerant tool arguments, ids and names, and error bodies of every shape."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from sidecar.protocol.openai import ToolNames, translate_error, translate_message
from sidecar.protocol.openai.response import anthropic_usage, parse_arguments
from sidecar.testing.fake_openai import Error, Reply, ToolCall, Wire, completion_body


def message(body: dict[str, Any], names: ToolNames | None = None, stops: list[str] | None = None) -> dict[str, Any]:
    return translate_message(msgspec.json.encode(body), "claude-opus-4-8", names or ToolNames(), stops or [])


def answer(reply: Reply, request: bytes = b"x" * 400) -> dict[str, Any]:
    return message(completion_body(reply, "gpt-test", request))


def test_text_answer_echoes_the_requested_model() -> None:
    msg = answer(Reply(text="Hello."))
    assert msg["model"] == "claude-opus-4-8"
    assert msg["type"] == "message" and msg["role"] == "assistant" and msg["id"].startswith("msg_")
    assert msg["content"] == [{"type": "text", "text": "Hello."}]
    assert msg["stop_reason"] == "end_turn" and msg["stop_sequence"] is None


def test_text_and_tool_calls_are_both_kept() -> None:
    msg = answer(Reply(text="Let me check.", tool_calls=(ToolCall("Read", {"file_path": "/a"}, id="call_1"),)))
    assert msg["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "Read", "input": {"file_path": "/a"}},
    ]
    assert msg["stop_reason"] == "tool_use"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_becomes_a_thinking_block_without_a_signature(field: str) -> None:
    msg = answer(Reply(text="Answer", reasoning="hmm", reasoning_field=field))
    assert msg["content"] == [{"type": "thinking", "thinking": "hmm", "signature": ""}, {"type": "text", "text": "Answer"}]


@pytest.mark.parametrize(
    ("finish", "tools", "expected"),
    [
        ("stop", False, "end_turn"),
        ("length", False, "max_tokens"),
        ("tool_calls", True, "tool_use"),
        ("function_call", True, "tool_use"),
        ("content_filter", False, "refusal"),
        ("stop", True, "tool_use"),  # servers that say "stop" after calling tools
        ("tool_calls", False, "end_turn"),  # no call came: not a tool turn
        ("eos", False, "end_turn"),
    ],
)
def test_finish_reasons(finish: str, tools: bool, expected: str) -> None:
    calls = (ToolCall("Read", {"file_path": "/a"}),) if tools else ()
    assert answer(Reply(text="x", tool_calls=calls, finish_reason=finish))["stop_reason"] == expected


def test_no_finish_reason_is_an_end_turn() -> None:
    assert answer(Reply(text="x", wire=Wire(no_finish_reason=True)))["stop_reason"] == "end_turn"


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    msg = answer(Reply(text=None, refusal="I can't help with that."))
    assert msg["content"] == [{"type": "text", "text": "I can't help with that."}]
    assert msg["stop_reason"] == "refusal"


def test_a_matched_stop_sequence_is_reported() -> None:
    body = completion_body(Reply(text="x", stop_reason="\nHuman:"), "m", b"")
    assert message(body, stops=["\nHuman:"])["stop_reason"] == "stop_sequence"
    assert message(body, stops=["\nHuman:"])["stop_sequence"] == "\nHuman:"
    assert message(body, stops=["END"])["stop_reason"] == "end_turn"


def test_usage_subtracts_cached_tokens_from_input() -> None:
    msg = answer(Reply(text="x", prompt_tokens=1000, cached_tokens=800, completion_tokens=50))
    assert msg["usage"] == {"input_tokens": 200, "output_tokens": 50, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0}


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"prompt_tokens": 12, "completion_tokens": 2}, (12, 2, 0, 0)),
        ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10}}, (50, 5, 40, 10)),
        ({"prompt_tokens": 100, "completion_tokens": 5, "prompt_cache_hit_tokens": 64}, (36, 5, 64, 0)),  # DeepSeek
        ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": None}, (10, 1, 0, 0)),
        ({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}, (0, 1, 9, 0)),
    ],
)
def test_usage_shapes(usage: dict[str, Any], expected: tuple[int, int, int, int]) -> None:
    u = anthropic_usage(usage)
    assert (u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"]) == expected


def test_groq_usage_is_read_from_x_groq() -> None:
    body = completion_body(Reply(text="x"), "m", b"")
    usage = body.pop("usage")
    body["x_groq"] = {"usage": usage}
    assert message(body)["usage"]["output_tokens"] == usage["completion_tokens"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"path": "a.py"}', {"path": "a.py"}),
        ("", {}),
        (None, {}),
        ("{'path': 'a.py',}", {"path": "a.py"}),
        ('{"path": "a.py",}', {"path": "a.py"}),
        ('"{\\"path\\": \\"a.py\\"}"', {"path": "a.py"}),
        ("[1, 2]", {}),
        ('{"path": "a.py"', {"path": "a.py"}),  # the closing brace was lost
        ('{"path": ', {}),
        ({"already": "parsed"}, {"already": "parsed"}),
    ],
)
def test_tool_arguments_are_read_tolerantly(raw: Any, expected: dict[str, Any]) -> None:
    assert parse_arguments(raw, "Read") == expected


def test_tool_ids_are_made_usable_and_unique() -> None:
    calls = (ToolCall("A", "{}", id="functions.Bash:0"), ToolCall("B", "{}", id="0"), ToolCall("C", "{}", id="dup"), ToolCall("D", "{}", id="dup"))
    ids = [b["id"] for b in answer(Reply(text=None, tool_calls=calls))["content"]]
    assert ids[0] == "functions_Bash_0"
    assert ids[1].startswith("toolu_") and ids[2] == "dup" and ids[3].startswith("toolu_")
    assert len(set(ids)) == 4


def test_missing_ids_are_generated_and_short_names_mapped_back() -> None:
    names = ToolNames()
    long = "mcp__" + "x" * 70
    wire = names.add(long)
    body = completion_body(Reply(text=None, tool_calls=(ToolCall(wire, "{}"),)), "m", b"")
    del body["choices"][0]["message"]["tool_calls"][0]["id"]
    block = message(body, names)["content"][0]
    assert block["name"] == long and block["id"].startswith("toolu_")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"choices": []}', b'{"error": {"message": "upstream exploded"}}'],
)
def test_unreadable_answers_raise_value_error(body: bytes) -> None:
    with pytest.raises(ValueError):
        translate_message(body, "m", ToolNames(), [])


def test_an_error_in_a_200_answer_keeps_its_message() -> None:
    with pytest.raises(ValueError, match="upstream exploded"):
        translate_message(b'{"error": {"message": "upstream exploded", "code": 502}}', "m", ToolNames(), [])


@pytest.mark.parametrize(
    ("status", "etype", "out_status"),
    [
        (400, "invalid_request_error", 400),
        (401, "authentication_error", 401),
        (403, "permission_error", 403),
        (404, "not_found_error", 404),
        (413, "request_too_large", 413),
        (422, "invalid_request_error", 400),
        (429, "rate_limit_error", 429),
        (500, "api_error", 500),
        (502, "api_error", 502),
        (503, "overloaded_error", 503),
        (529, "overloaded_error", 529),
        (418, "invalid_request_error", 418),
    ],
)
def test_error_statuses_map_to_anthropic_types(status: int, etype: str, out_status: int) -> None:
    body = msgspec.json.encode(Error(status, message="the upstream's words").body())
    assert translate_error(status, body) == (out_status, etype, "the upstream's words")


@pytest.mark.parametrize("shape", ["openai", "vllm", "ollama", "detail"])
def test_error_messages_are_found_in_every_shape(shape: str) -> None:
    body = msgspec.json.encode(Error(400, message="This model's maximum context length is 8192 tokens.", shape=shape).body())
    assert translate_error(400, body)[2] == "This model's maximum context length is 8192 tokens."


def test_an_error_body_that_is_not_json_is_kept_as_text() -> None:
    assert translate_error(502, b"<html>Bad Gateway</html>")[2] == "<html>Bad Gateway</html>"
    assert translate_error(500, b"")[2] == "upstream answered HTTP 500"
    validation = {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]}
    assert json.loads(translate_error(422, json.dumps(validation).encode())[2]) == validation["detail"]


def test_arguments_cut_by_max_tokens_are_not_closed_into_a_shorter_input() -> None:
    cut = Reply(text=None, tool_calls=(ToolCall("Write", '{"file_path": "/a", "content": "line 1\\nli', id="c"),), finish_reason="length")
    msg = answer(cut)
    assert msg["stop_reason"] == "max_tokens"
    assert msg["content"][0]["input"] == {}
    finished = Reply(text=None, tool_calls=(ToolCall("Write", '{"file_path": "/a"', id="c"),), finish_reason="tool_calls")
    assert answer(finished)["content"][0]["input"] == {"file_path": "/a"}
