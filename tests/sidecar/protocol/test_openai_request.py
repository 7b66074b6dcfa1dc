"""Anthropic requests as Chat Completions requests: every field that maps, every quirk that
changes the mapping, and a clear InvalidRequest for what cannot be sent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from sidecar.errors import InvalidRequest
from sidecar.protocol.openai import Quirks, quirks_for, translate_request
from sidecar.protocol.openai.names import wire_tool_id

USER = {"role": "user", "content": "hi"}
TOOL = {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}}
PNG = "iVBORw0KGgo="


def chat(quirks: Quirks | None = None, model: str = "gpt-test", stream: bool = False, **body: Any) -> dict[str, Any]:
    body.setdefault("messages", [USER])
    body.setdefault("max_tokens", 1024)
    out, _ = translate_request(body, model, quirks or Quirks(), stream)
    return out


def tool_turn(tool_id: str = "toolu_01", name: str = "Read", result: Any = "ok", **extra: Any) -> list[dict[str, Any]]:
    return [
        USER,
        {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": name, "input": {"file_path": "/a"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result, **extra}]},
    ]


# ---------------------------------------------------------------- system


def test_system_string_becomes_the_first_message() -> None:
    out = chat(system="Be terse.")
    assert out["messages"] == [{"role": "system", "content": "Be terse."}, USER]


def test_system_blocks_are_joined_without_cache_control_or_the_billing_header() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.123; cc_entrypoint=sdk-cli;"},
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "B"},
    ]
    assert chat(system=system)["messages"][0] == {"role": "system", "content": "A\n\nB"}


def test_system_messages_inside_messages_stay_in_place_or_are_hoisted() -> None:
    messages = [USER, {"role": "system", "content": "Agents: ..."}, {"role": "assistant", "content": "ok"}, {"role": "user", "content": "go"}]
    kept = chat(system="S", messages=messages)["messages"]
    assert [m["role"] for m in kept] == ["system", "user", "system", "assistant", "user"]
    assert kept[2]["content"] == "Agents: ..."
    hoisted = chat(Quirks(system_messages="hoist"), system="S", messages=messages)["messages"]
    assert [m["role"] for m in hoisted] == ["system", "user", "assistant", "user"]
    assert hoisted[0]["content"] == "S\n\nAgents: ..."


def test_a_system_message_between_a_tool_call_and_its_result_waits_for_the_result() -> None:
    messages = tool_turn()
    messages.insert(2, {"role": "system", "content": "reminder"})
    roles = [m["role"] for m in chat(messages=messages)["messages"]]
    assert roles == ["user", "assistant", "tool", "system"]


# ---------------------------------------------------------------- user content


def test_text_only_user_blocks_become_one_string() -> None:
    content = [{"type": "text", "text": "<system-reminder>x</system-reminder>"}, {"type": "text", "text": "say hi", "cache_control": {"type": "ephemeral"}}]
    assert chat(messages=[{"role": "user", "content": content}])["messages"] == [{"role": "user", "content": "<system-reminder>x</system-reminder>\nsay hi"}]


def test_images_become_image_url_parts() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.test/y.png"}},
    ]
    parts = chat(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://example.test/y.png"}},
    ]


def test_documents_become_file_parts_or_text() -> None:
    content = [
        {"type": "document", "title": "spec", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "plain words"}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
    ]
    parts = chat(messages=[{"role": "user", "content": content}])["messages"][0]["content"]
    assert parts == [
        {"type": "text", "text": "spec"},
        {"type": "file", "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "text", "text": "plain words"},
        {"type": "text", "text": "inner"},
    ]


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"type": "image", "source": {"type": "file", "file_id": "file_1"}}, "an image of source type 'file'"),
        ({"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}}, "a document of source type 'url'"),
        ({"type": "container_upload", "file_id": "f"}, "a 'container_upload' block cannot be sent"),
        ({"type": "text", "text": 3}, "messages[0].content[0].text: must be a string"),
    ],
)
def test_content_that_has_no_place_in_chat_completions_is_refused(block: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        chat(messages=[{"role": "user", "content": [block]}])


# ---------------------------------------------------------------- tool use and results


def test_assistant_text_and_tool_use_become_content_and_tool_calls() -> None:
    messages = tool_turn()
    messages[1]["content"].insert(0, {"type": "text", "text": "Reading."})
    assistant = chat(messages=messages)["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "Reading.",
        "tool_calls": [{"id": "toolu_01", "type": "function", "function": {"name": "Read", "arguments": '{"file_path":"/a"}'}}],
    }


def test_tool_results_come_before_the_users_text_in_order() -> None:
    messages = [
        USER,
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {}},
            {"type": "tool_use", "id": "toolu_02", "name": "Read", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "ok"},
            {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "text", "text": "42"}]},
            {"type": "text", "text": "continue"},
        ]},
    ]  # fmt: skip
    out = chat(messages=messages)["messages"][2:]
    assert out == [
        {"role": "tool", "tool_call_id": "toolu_01", "content": "ok"},
        {"role": "tool", "tool_call_id": "toolu_02", "content": "42"},
        {"role": "user", "content": "continue"},
    ]


def test_a_result_with_an_image_is_one_tool_message_and_the_image_follows() -> None:
    result = [{"type": "text", "text": "screenshot:"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]
    out = chat(messages=tool_turn(result=result))["messages"][2:]
    assert [m["role"] for m in out] == ["tool", "user"]
    assert out[0]["content"].startswith("screenshot:")
    assert out[1]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    assert "toolu_01" in out[1]["content"][0]["text"]


@pytest.mark.parametrize(
    ("extra", "content"),
    [({}, ""), ({"is_error": True}, "Error: ENOENT"), ({"is_error": False}, "ENOENT")],
)
def test_empty_results_and_is_error(extra: dict[str, Any], content: str) -> None:
    result = None if not extra else "ENOENT"
    messages = tool_turn(result=result, **extra)
    if result is None:
        del messages[2]["content"][0]["content"]
    assert chat(messages=messages)["messages"][2] == {"role": "tool", "tool_call_id": "toolu_01", "content": content}


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        (tool_turn()[:2], r"tool_use ids \['toolu_01'\] have no tool_result"),
        ([*tool_turn()[:2], USER], r"messages\[2\]: tool_use ids \['toolu_01'\] of the previous assistant turn have no tool_result"),
        ([USER, {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "?"}]}], "answers no tool_use"),
        (
            [USER, {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Read", "input": {}},
                                                     {"type": "tool_use", "id": "t1", "name": "Read", "input": {}}]}],
            "appears twice in one message",
        ),
        (
            [*tool_turn()[:2], {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "a"}, {"type": "tool_result", "tool_use_id": "toolu_01", "content": "b"}]}],
            "a second tool_result",
        ),
    ],
)  # fmt: skip
def test_tool_pairing_errors_are_clear(messages: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        chat(messages=messages)


def test_an_id_reused_in_a_later_turn_gets_its_own_wire_id_for_call_and_result() -> None:
    messages = [*tool_turn(), {"role": "assistant", "content": "done"}, *tool_turn()]
    out = chat(messages=messages)["messages"]
    calls = [m["tool_calls"][0]["id"] for m in out if m.get("tool_calls")]
    results = [m["tool_call_id"] for m in out if m["role"] == "tool"]
    assert calls == results
    assert calls[0] == "toolu_01" and calls[1] != "toolu_01"


def test_an_empty_tool_name_in_history_gets_a_placeholder() -> None:
    out = chat(messages=tool_turn(name=""))["messages"]
    assert out[1]["tool_calls"][0]["function"]["name"] == "unnamed_tool"


@pytest.mark.parametrize(
    ("mode", "tool_id", "expected"),
    [
        ("keep", "functions.Read:0", "functions.Read:0"),
        ("sanitize", "toolu_01ABC", "toolu_01ABC"),
        ("sanitize", "functions.Read:0", "call_" + hashlib.sha256(b"functions.Read:0").hexdigest()[:35]),
        ("sanitize", "t" * 41, "call_" + hashlib.sha256(b"t" * 41).hexdigest()[:35]),
    ],
)
def test_tool_ids_are_rewritten_consistently(mode: str, tool_id: str, expected: str) -> None:
    out = chat(Quirks(tool_ids=mode), messages=tool_turn(tool_id=tool_id))["messages"]
    assert out[1]["tool_calls"][0]["id"] == out[2]["tool_call_id"] == expected


def test_mistral_ids_are_nine_alphanumerics() -> None:
    wire = wire_tool_id("toolu_01XFDUDYJgAACzvnptvVoYEL", "mistral", 40)
    assert len(wire) == 9 and wire.isalnum()
    assert wire == wire_tool_id("toolu_01XFDUDYJgAACzvnptvVoYEL", "mistral", 40)


def test_thinking_in_history_is_dropped_or_replayed_never_with_its_signature() -> None:
    messages = tool_turn()
    messages[1]["content"][:0] = [
        {"type": "thinking", "thinking": "plan...", "signature": "EqQBCkYIBxgCKkD"},
        {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
    ]
    dropped = chat(messages=messages)["messages"][1]
    assert "reasoning_content" not in dropped and dropped["content"] is None
    deepseek = quirks_for("ds", "openai-compatible", {"preset": "deepseek"})
    replayed = chat(deepseek, messages=messages)["messages"][1]
    assert replayed["reasoning_content"] == "plan..."
    assert "EqQBCkYIBxgCKkD" not in json.dumps(replayed) and "EmwKAhgBEgy" not in json.dumps(replayed)


def test_an_assistant_turn_of_only_thinking_is_left_out() -> None:
    messages = [USER, {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": ""}]}, {"role": "user", "content": "?"}]
    assert [m["role"] for m in chat(messages=messages)["messages"]] == ["user", "user"]


# ---------------------------------------------------------------- tools and tool_choice


def test_tools_become_functions_without_schema_meta_or_custom_type() -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
              "properties": {"$schema": {"type": "string"}, "n": {"type": "integer"}}, "additionalProperties": False}  # fmt: skip
    out = chat(tools=[{"type": "custom", "name": "Edit", "description": "edit", "input_schema": schema}])
    assert out["tools"] == [{"type": "function", "function": {"name": "Edit", "description": "edit", "parameters": {
        "type": "object", "properties": {"$schema": {"type": "string"}, "n": {"type": "integer"}}, "additionalProperties": False}}}]  # fmt: skip


def test_a_schema_without_type_gets_type_object() -> None:
    out = chat(tools=[{"name": "Ping", "input_schema": {"properties": {}}}])
    assert out["tools"][0]["function"]["parameters"]["type"] == "object"


def test_long_and_invalid_tool_names_are_shortened_deterministically() -> None:
    long = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"
    dotted = "mcp.server.tool"
    out, names = translate_request(
        {"messages": [USER], "max_tokens": 10, "tools": [{"name": long, "input_schema": {}}, {"name": dotted, "input_schema": {}}]},
        "m", Quirks(), False,
    )  # fmt: skip
    wire = [t["function"]["name"] for t in out["tools"]]
    assert wire[0] == long[:55] + "_" + hashlib.sha256(long.encode()).hexdigest()[:8]
    assert len(wire[0]) == 64
    assert wire[1] == "mcp_server_tool_" + hashlib.sha256(dotted.encode()).hexdigest()[:8]
    assert names.client(wire[0]) == long and names.client(wire[1]) == dotted


@pytest.mark.parametrize(
    ("choice", "mode", "expected", "parallel"),
    [
        ({"type": "auto"}, "full", "auto", None),
        ({"type": "any"}, "full", "required", None),
        ({"type": "any"}, "no-required", "auto", None),
        ({"type": "tool", "name": "Read"}, "full", {"type": "function", "function": {"name": "Read"}}, None),
        ({"type": "none"}, "full", "none", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "full", "auto", False),
        ({"type": "any"}, "off", None, None),
    ],
)
def test_tool_choice(choice: dict[str, Any], mode: str, expected: Any, parallel: bool | None) -> None:
    out = chat(Quirks(tool_choice=mode), tools=[TOOL], tool_choice=choice)
    assert out.get("tool_choice") == expected
    assert out.get("parallel_tool_calls") == parallel


def test_tool_choice_without_tools_is_not_sent_and_a_missing_tool_is_refused() -> None:
    assert "tool_choice" not in chat(tool_choice={"type": "any"})
    with pytest.raises(InvalidRequest, match="'Write' is not one of the request's tools"):
        chat(tools=[TOOL], tool_choice={"type": "tool", "name": "Write"})


def test_anthropic_server_tools_and_mcp_servers_are_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"tools\[0\]: 'web_search' is an Anthropic-defined tool \(web_search_20250305\)"):
        chat(tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 5}])
    with pytest.raises(InvalidRequest, match="mcp_servers"):
        chat(mcp_servers=[{"type": "url", "url": "https://mcp.example.test", "name": "x"}])


# ---------------------------------------------------------------- parameters


def test_sampling_and_limits() -> None:
    out = chat(max_tokens=64000, temperature=0.2, top_p=0.9, top_k=40, stop_sequences=["\nHuman:"], metadata={"user_id": "u"})
    assert out["max_tokens"] == 64000 and out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert out["stop"] == ["\nHuman:"]
    assert "top_k" not in out and "user" not in out and "metadata" not in out
    assert chat(Quirks(top_k=True), top_k=40)["top_k"] == 40


def test_openai_preset_uses_max_completion_tokens_caps_and_drops_sampling_for_reasoning_models() -> None:
    q = quirks_for("oa", "openai", {})
    gpt4o = chat(q, model="gpt-4o", max_tokens=64000, temperature=0.5)
    assert gpt4o["max_completion_tokens"] == 16384 and "max_tokens" not in gpt4o and gpt4o["temperature"] == 0.5
    gpt5 = chat(q, model="gpt-5-mini", max_tokens=64000, temperature=1)
    assert gpt5["max_completion_tokens"] == 64000 and "temperature" not in gpt5


def test_too_many_stop_sequences_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="5 given, but this provider takes at most 4"):
        chat(stop_sequences=list("abcde"))


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 3000}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 5000}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 16000}, None, "high"),
        ({"type": "enabled", "budget_tokens": 31999}, None, "high"),
        ({"type": "adaptive"}, {"effort": "high"}, "high"),
        ({"type": "adaptive"}, None, "medium"),
        ({"type": "adaptive"}, {"effort": "max"}, "high"),
        ({"type": "disabled"}, {"effort": "high"}, None),
        (None, {"effort": "low"}, "low"),
        (None, None, None),
    ],
)
def test_thinking_becomes_a_reasoning_effort(thinking: Any, config: Any, effort: str | None) -> None:
    body: dict[str, Any] = {}
    if thinking:
        body["thinking"] = thinking
    if config:
        body["output_config"] = config
    assert chat(Quirks(reasoning_request="effort"), **body).get("reasoning_effort") == effort
    assert "reasoning_effort" not in chat(Quirks(), **body)  # a server that takes none


def test_openrouter_reasoning_is_a_token_budget_or_an_effort() -> None:
    q = quirks_for("or", "openai-compatible", {"preset": "openrouter"})
    assert chat(q, thinking={"type": "enabled", "budget_tokens": 4000})["reasoning"] == {"max_tokens": 4000}
    assert chat(q, thinking={"type": "adaptive"}, output_config={"effort": "low"})["reasoning"] == {"effort": "low"}


def test_non_reasoning_models_get_no_reasoning_parameter() -> None:
    assert "reasoning_effort" not in chat(quirks_for("oa", "openai", {}), model="gpt-4.1", thinking={"type": "adaptive"})


TITLE = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}
LOOSE = {"type": "object", "properties": {"title": {"type": "string"}, "tags": {"type": "array"}}, "required": ["title"]}


@pytest.mark.parametrize(
    ("mode", "schema", "strict"),
    [("strict", TITLE, True), ("strict", LOOSE, False), ("loose", TITLE, False)],
)
def test_structured_output_becomes_a_json_schema_response_format(mode: str, schema: dict[str, Any], strict: bool) -> None:
    out = chat(Quirks(json_schema=mode), output_config={"effort": "high", "format": {"type": "json_schema", "schema": schema}})
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "structured_output", "schema": schema, "strict": strict}}


@pytest.mark.parametrize("mode", ["json_object", "off"])
def test_without_json_schema_support_the_schema_is_an_instruction(mode: str) -> None:
    out = chat(Quirks(json_schema=mode), output_config={"format": {"type": "json_schema", "schema": TITLE}})
    assert out.get("response_format") == ({"type": "json_object"} if mode == "json_object" else None)
    note = out["messages"][-1]
    assert note["role"] == "system" and "JSON" in note["content"] and '"title"' in note["content"]


def test_streaming_asks_for_usage_unless_the_server_cannot() -> None:
    assert chat(stream=True)["stream_options"] == {"include_usage": True}
    assert "stream_options" not in chat(Quirks(include_usage=False), stream=True)
    assert "stream" not in chat()


def test_drop_params_removes_fields() -> None:
    out = chat(Quirks(drop_params=("temperature", "stop")), temperature=0.3, stop_sequences=["x"])
    assert "temperature" not in out and "stop" not in out


def test_the_body_is_not_mutated() -> None:
    body = {"messages": tool_turn(), "max_tokens": 5, "system": [{"type": "text", "text": "S"}], "tools": [TOOL]}
    before = json.dumps(body)
    translate_request(body, "m", Quirks(tool_ids="mistral"), True)
    assert json.dumps(body) == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "messages: must be a non-empty list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "'tool' is not user, assistant or system"),
        ({"messages": [USER], "tools": [{"name": "x", "input_schema": "no"}]}, r"tools\[0\].input_schema: must be an object"),
        ({"messages": [USER], "tool_choice": "auto", "tools": [TOOL]}, "tool_choice: must be an object"),
        ({"messages": [USER], "output_config": {"format": {"type": "regex"}}}, "only {type: json_schema"),
    ],
)
def test_malformed_requests_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        translate_request(body, "m", Quirks(), False)
