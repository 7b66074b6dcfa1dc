"""Anthropic Messages requests translated to Gemini generateContent bodies."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.errors import InvalidRequest
from sidecar.protocol.gemini import (
    NEXT_SIG,
    PREV_SIG,
    SKIP_SIGNATURE,
    THOUGHT_SIG,
    build_count_request,
    build_request,
    generation,
    is_gemini_signature,
    model_path,
)
from sidecar.protocol.gemini_tools import ToolNames
from sidecar.testing.gemini_validate import validate, validate_count

PRO3 = "gemini-3-pro-preview"
FLASH25 = "gemini-2.5-flash"


def translate(body: dict[str, Any], model: str = PRO3, names: ToolNames | None = None) -> dict[str, Any]:
    out = build_request({"max_tokens": 100, **body}, model, names or ToolNames())
    validate(out)
    return out


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def assistant(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def tool_use(tid: str, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "tool_use", "id": tid, "name": name, "input": args or {}}


def tool_result(tid: str, content: Any = "ok", **kw: Any) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tid, "content": content, **kw}


def test_roles_alternate_and_system_messages_become_reminders_in_place() -> None:
    out = translate(
        {
            "system": [{"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "B"}],
            "messages": [
                user("hi"),
                {"role": "system", "content": "Agents: Explore"},
                user([{"type": "text", "text": "more", "cache_control": {"type": "ephemeral"}}]),
                assistant("hello"),
                assistant([{"type": "text", "text": "again"}]),
                user("bye"),
            ],
            "metadata": {"user_id": "{\"session_id\":\"s\"}"},
        }
    )
    assert out["systemInstruction"] == {"parts": [{"text": "A"}, {"text": "B"}]}
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}, {"text": "<system-reminder>\nAgents: Explore\n</system-reminder>"}, {"text": "more"}]},
        {"role": "model", "parts": [{"text": "hello"}, {"text": "again"}]},
        {"role": "user", "parts": [{"text": "bye"}]},
    ]
    assert "cache_control" not in str(out) and "user_id" not in str(out)


def test_tool_results_answer_by_name_first_in_their_content_in_order() -> None:
    out = translate(
        {
            "messages": [
                user("go"),
                assistant([{"type": "text", "text": "Reading."}, tool_use("toolu_1", "Read", {"p": "/a"}), tool_use("toolu_2", "Bash", {"c": "ls"})]),
                user(
                    [
                        {"type": "text", "text": "continue"},
                        tool_result("toolu_2", [{"type": "text", "text": "4"}, {"type": "text", "text": "2"}]),
                        tool_result("toolu_1", "ENOENT", is_error=True),
                    ]
                ),
            ]
        },
        model=FLASH25,
    )
    assert out["contents"][1]["parts"] == [
        {"text": "Reading."},
        {"functionCall": {"name": "Read", "args": {"p": "/a"}}},
        {"functionCall": {"name": "Bash", "args": {"c": "ls"}}},
    ]
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "Bash", "response": {"output": "4\n2"}}},
        {"functionResponse": {"name": "Read", "response": {"error": "ENOENT"}}},
        {"text": "continue"},
    ]


def test_empty_tool_result_and_result_with_an_image_give_one_response_each() -> None:
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    out = translate(
        {
            "messages": [
                user("shot"),
                assistant([tool_use("toolu_3", "Screenshot"), tool_use("toolu_4", "Noop")]),
                user([tool_result("toolu_3", [{"type": "text", "text": "screenshot:"}, img]), {"type": "tool_result", "tool_use_id": "toolu_4"}]),
            ]
        }
    )
    assert out["contents"][2]["parts"] == [
        {"functionResponse": {"name": "Screenshot", "response": {"output": "screenshot:"}}},
        {"functionResponse": {"name": "Noop", "response": {"output": ""}}},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
    ]


def test_images_and_documents() -> None:
    out = translate(
        {
            "messages": [
                user(
                    [
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/y.png"}},
                        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"}},
                        {"type": "document", "source": {"type": "url", "url": "https://x.test/doc"}},
                        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "body"}},
                        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "inner"}]}},
                    ]
                )
            ]
        }
    )
    assert out["contents"][0]["parts"] == [
        {"fileData": {"fileUri": "https://x.test/y.png", "mimeType": "image/png"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
        {"fileData": {"fileUri": "https://x.test/doc", "mimeType": "application/pdf"}},
        {"text": "Notes\n\nbody"},
        {"text": "inner"},
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"messages": [user([{"type": "image", "source": {"type": "file", "file_id": "file_1"}}])]}, "file ids"),
        ({"messages": [user([{"type": "document", "source": {"type": "file", "file_id": "f"}}])]}, "base64, text or a URL"),
        ({"messages": [user([{"type": "search_result", "source": "s", "title": "t", "content": []}])]}, "'search_result'"),
        ({"messages": [user("x"), assistant([{"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}])]}, "'server_tool_use'"),
        ({"messages": [user([tool_result("toolu_missing")])]}, "answers no tool_use"),
        ({"messages": [user("x")], "tools": [{"type": "bash_20250124", "name": "bash"}]}, "server tool 'bash_20250124'"),
        ({"messages": [user("x")], "mcp_servers": [{"type": "url", "url": "https://m"}]}, "mcp_servers"),
        ({"messages": [user("x")], "stop_sequences": ["a", "b", "c", "d", "e", "f"]}, "at most 5"),
        ({"messages": [user("x")], "thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"messages": []}, "non-empty"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "role 'tool'"),
        ({"messages": [user("")]}, "every message is empty"),
    ],
)
def test_what_gemini_cannot_take_is_a_clear_400(body: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        build_request({"max_tokens": 10, **body}, PRO3, ToolNames())
    assert words in e.value.message
    assert e.value.status == 400


def test_long_and_odd_tool_names_get_aliases_that_map_back() -> None:
    long_name = "mcp__very_long_server_name__and_an_even_longer_tool_name_exceeding_limits"
    names = ToolNames()
    out = translate(
        {
            "messages": [user("x"), assistant([tool_use("toolu_1", long_name)]), user([tool_result("toolu_1")]), assistant([tool_use("toolu_2", "")]), user([tool_result("toolu_2")])],
            "tools": [
                {"name": long_name, "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
                {"name": "9lives tool", "description": "odd", "input_schema": {"type": "object"}, "type": "custom"},
            ],
            "tool_choice": {"type": "tool", "name": long_name},
        },
        names=names,
    )
    decls = out["tools"][0]["functionDeclarations"]
    alias = decls[0]["name"]
    assert len(alias) == 64 and alias.startswith(long_name[:55])
    assert names.original(alias) == long_name
    assert decls[1] == {"name": "_9lives_tool", "description": "odd"}
    assert names.original("_9lives_tool") == "9lives tool"
    assert out["contents"][1]["parts"][0]["functionCall"]["name"] == alias
    assert out["contents"][2]["parts"][0]["functionResponse"]["name"] == alias
    assert out["contents"][3]["parts"][0]["functionCall"]["name"] == "unnamed_tool"
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [alias]}}
    assert "custom" not in str(decls)


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ({"type": "auto"}, {"mode": "AUTO"}),
        ({"type": "any"}, {"mode": "ANY"}),
        ({"type": "none"}, {"mode": "NONE"}),
        ({"type": "tool", "name": "Bash"}, {"mode": "ANY", "allowedFunctionNames": ["Bash"]}),
        ({"type": "auto", "disable_parallel_tool_use": True}, {"mode": "AUTO"}),
    ],
)
def test_tool_choice(choice: dict[str, Any], config: dict[str, Any]) -> None:
    tools = [{"name": "Bash", "input_schema": {"type": "object", "properties": {"c": {"type": "string"}}}}]
    out = translate({"messages": [user("x")], "tools": tools, "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_web_search_becomes_google_search_and_a_tool_free_choice_is_dropped() -> None:
    out = translate({"messages": [user("x")], "tools": [{"type": "web_search_20250305", "name": "web_search"}], "tool_choice": {"type": "auto"}})
    assert out["tools"] == [{"googleSearch": {}}]
    assert "toolConfig" not in out


def test_a_tool_gemini_cannot_describe_goes_as_json_schema() -> None:
    schema = {"type": "object", "properties": {"env": {"type": "object", "additionalProperties": {"type": "string"}}}, "required": ["env"]}
    out = translate({"messages": [user("x")], "tools": [{"name": "Run", "input_schema": {"$schema": "s", **schema}}]})
    assert out["tools"][0]["functionDeclarations"][0] == {"name": "Run", "parametersJsonSchema": schema}


@pytest.mark.parametrize(
    ("model", "thinking", "effort", "config"),
    [
        (PRO3, {"type": "adaptive"}, "high", {"includeThoughts": True, "thinkingLevel": "high"}),
        (PRO3, {"type": "adaptive"}, "low", {"includeThoughts": True, "thinkingLevel": "low"}),
        (PRO3, {"type": "adaptive"}, None, {"includeThoughts": True}),
        (FLASH25, {"type": "adaptive"}, "high", {"includeThoughts": True}),
        (FLASH25, {"type": "enabled", "budget_tokens": 1024}, None, {"includeThoughts": True, "thinkingBudget": 1024}),
        (FLASH25, {"type": "enabled", "budget_tokens": 31999}, None, {"includeThoughts": True, "thinkingBudget": 24576}),
        (PRO3, {"type": "disabled"}, None, {"includeThoughts": False}),
        ("gemini-2.0-flash", {"type": "enabled", "budget_tokens": 2048}, None, None),
        ("gemma-3-27b-it", {"type": "adaptive"}, None, None),
    ],
)
def test_thinking(model: str, thinking: dict[str, Any], effort: str | None, config: dict[str, Any] | None) -> None:
    body: dict[str, Any] = {"messages": [user("x")], "thinking": thinking}
    if effort:
        body["output_config"] = {"effort": effort}
    out = translate(body, model=model)
    assert out["generationConfig"].get("thinkingConfig") == config


def test_sampling_limits_and_structured_output() -> None:
    out = translate(
        {
            "messages": [user("x")],
            "max_tokens": 64000,
            "temperature": 1,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["\nHuman:"],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"], "additionalProperties": False}}},
        }
    )
    assert out["generationConfig"] == {
        "maxOutputTokens": 64000, "temperature": 1, "topP": 0.9, "topK": 40, "stopSequences": ["\nHuman:"],
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT", "properties": {"title": {"type": "STRING"}}, "required": ["title"]},
    }  # fmt: skip


def test_signatures_go_back_on_their_own_parts_and_anthropic_ones_never() -> None:
    history = assistant(
        [
            {"type": "thinking", "thinking": "plan", "signature": THOUGHT_SIG + "c2lnVA=="},
            {"type": "text", "text": "Looking."},
            {"type": "thinking", "thinking": "", "signature": PREV_SIG + "c2lnUA=="},
            {"type": "thinking", "thinking": "summary", "signature": NEXT_SIG + "c2lnTg=="},
            tool_use("toolu_1", "Read", {"p": "/a"}),
            tool_use("toolu_2", "Read", {"p": "/b"}),
            {"type": "thinking", "thinking": "anthropic", "signature": "EqQBCkYIBxgCKkBanthropic"},
            {"type": "redacted_thinking", "data": "EmwKAhgB"},
        ]
    )
    out = translate({"messages": [user("x"), history, user([tool_result("toolu_1"), tool_result("toolu_2")])]})
    assert out["contents"][1]["parts"] == [
        {"text": "plan", "thought": True, "thoughtSignature": "c2lnVA=="},
        {"text": "Looking.", "thoughtSignature": "c2lnUA=="},
        {"functionCall": {"name": "Read", "args": {"p": "/a"}}, "thoughtSignature": "c2lnTg=="},
        {"functionCall": {"name": "Read", "args": {"p": "/b"}}},
    ]
    assert is_gemini_signature(NEXT_SIG + "x") and not is_gemini_signature("EqQBCkYIBxgCKkB")


def test_gemini_3_gets_the_documented_bypass_for_calls_from_another_model() -> None:
    body = {"messages": [user("x"), assistant([tool_use("toolu_1", "Bash"), tool_use("toolu_2", "Bash")]), user([tool_result("toolu_1"), tool_result("toolu_2")])]}
    calls = translate(body, model=PRO3)["contents"][1]["parts"]
    assert [p.get("thoughtSignature") for p in calls] == [SKIP_SIGNATURE, None]
    assert all("thoughtSignature" not in p for p in translate(body, model=FLASH25)["contents"][1]["parts"])


def test_duplicate_tool_ids_pair_each_result_with_the_call_just_before() -> None:
    out = translate(
        {
            "messages": [
                user("x"),
                assistant([tool_use("toolu_08", "Read")]),
                user([tool_result("toolu_08")]),
                assistant([tool_use("toolu_08", "Bash")]),
                user([tool_result("toolu_08")]),
            ]
        }
    )
    assert [c["parts"][0].get("functionResponse", {}).get("name") for c in out["contents"][2::2]] == ["Read", "Bash"]


def test_count_request_wraps_the_generate_request_without_its_limits() -> None:
    body = {"messages": [user("foo")], "tools": [{"name": "Bash", "input_schema": {"type": "object", "properties": {"c": {"type": "string"}}}}], "system": "S"}
    out = build_count_request(body, FLASH25, ToolNames())
    validate_count(out)
    inner = out["generateContentRequest"]
    assert inner["model"] == "models/gemini-2.5-flash"
    assert inner["systemInstruction"] == {"parts": [{"text": "S"}]}
    assert "generationConfig" not in inner


def test_model_names_and_generations() -> None:
    assert model_path("models/gemini-2.5-pro") == "models/gemini-2.5-pro"
    assert model_path("tunedModels/my-model") == "tunedModels/my-model"
    assert model_path("gemini x/..") == "models/gemini%20x%2F.."
    assert [generation(m) for m in ("gemini-2.5-flash-lite", "gemini-3-pro-preview", "gemini-flash-latest", "gemma-3")] == [2.5, 3.0, 3.0, None]
