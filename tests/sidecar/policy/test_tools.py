"""Tool rules: globs over tool names (MCP included), stripping, and the response filter."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.errors import PolicyDenied
from sidecar.policy.config import ToolsConfig
from sidecar.policy.tools import ToolRules, ToolUseFilter, refusal


def rules(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> ToolRules:
    return ToolRules(ToolsConfig(allow=allow, deny=deny))


@pytest.mark.parametrize(
    ("allow", "deny", "name", "allowed"),
    [
        ((), (), "Bash", True),
        ((), ("WebFetch",), "WebFetch", False),
        ((), ("WebFetch",), "webfetch", True),  # names are case-sensitive, as the API's are
        (("Read", "Bash"), (), "Write", False),
        (("mcp__github__*",), (), "mcp__github__create_issue", True),
        (("mcp__github__*",), (), "mcp__gitlab__create_issue", False),
        ((), ("mcp__*__delete_*",), "mcp__github__delete_repo", False),
        ((), ("mcp__*__delete_*",), "mcp__github__list_deletions", True),
        (("mcp__*",), ("mcp__prod__*",), "mcp__prod__query", False),  # deny wins
        (("Bash",), (), "mcp__github__x", False),
    ],
)
def test_globs(allow: tuple[str, ...], deny: tuple[str, ...], name: str, allowed: bool) -> None:
    assert rules(allow, deny).allowed(name) is allowed


def test_strip_removes_denied_tools_and_keeps_the_order() -> None:
    body: dict[str, Any] = {"tools": [{"name": n, "input_schema": {}} for n in ("Bash", "WebFetch", "Read", "mcp__s__drop")]}
    removed = rules(deny=("WebFetch", "mcp__*")).strip(body)
    assert removed == ["WebFetch", "mcp__s__drop"]
    assert [t["name"] for t in body["tools"]] == ["Bash", "Read"]


def test_strip_leaves_a_body_without_denied_tools_as_it_is() -> None:
    body: dict[str, Any] = {"tools": [{"name": "Bash"}]}
    tools = body["tools"]
    assert rules(deny=("WebFetch",)).strip(body) == [] and body["tools"] is tools
    assert rules(deny=("WebFetch",)).strip({"messages": []}) == []


def test_forcing_a_denied_tool_is_refused() -> None:
    body = {"tools": [{"name": "WebFetch"}], "tool_choice": {"type": "tool", "name": "WebFetch"}}
    with pytest.raises(PolicyDenied, match="forces the tool 'WebFetch', which the tool policy denies"):
        rules(deny=("WebFetch",)).strip(body)


def stream(*blocks: tuple[str, dict[str, Any]], stop: str = "tool_use") -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": {"id": "m"}})]
    for i, (kind, block) in enumerate(blocks):
        events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": block}))
        if kind == "tool_use":
            for part in ('{"url": ', '"https://x"}'):
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}))
        else:
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": "hi"}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def run(f: ToolUseFilter, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [out for name, data in events for out in f.on_event(name, data)]


def test_a_streamed_call_of_a_denied_tool_becomes_a_refusal() -> None:
    f = ToolUseFilter(rules(deny=("WebFetch",)))
    out = run(f, stream(("text", {"type": "text", "text": ""}), ("tool_use", {"type": "tool_use", "id": "t", "name": "WebFetch", "input": {}})))
    assert [name for name, _ in out] == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert out[4][1] == {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}
    assert out[5][1]["delta"] == {"type": "text_delta", "text": refusal("WebFetch")}
    assert "input_json_delta" not in str(out)
    assert out[7][1]["delta"]["stop_reason"] == "end_turn"
    assert f.refused == ["WebFetch"]


def test_an_allowed_call_next_to_a_denied_one_keeps_stop_reason_tool_use() -> None:
    f = ToolUseFilter(rules(deny=("WebFetch",)))
    out = run(
        f,
        stream(
            ("tool_use", {"type": "tool_use", "id": "a", "name": "WebFetch", "input": {}}),
            ("tool_use", {"type": "tool_use", "id": "b", "name": "Bash", "input": {}}),
        ),
    )
    assert [d["content_block"]["type"] for n, d in out if n == "content_block_start"] == ["text", "tool_use"]
    assert sum(1 for n, d in out if n == "content_block_delta" and d["delta"]["type"] == "input_json_delta") == 2
    assert out[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_allowed_calls_pass_untouched() -> None:
    f = ToolUseFilter(rules(deny=("WebFetch",)))
    events = stream(("tool_use", {"type": "tool_use", "id": "b", "name": "Bash", "input": {}}))
    assert run(f, events) == events and f.refused == []


def test_a_whole_message_has_its_denied_calls_replaced() -> None:
    f = ToolUseFilter(rules(allow=("Bash",)))
    msg = {
        "type": "message",
        "content": [{"type": "text", "text": "let me look"}, {"type": "tool_use", "id": "t", "name": "WebFetch", "input": {"url": "u"}}],
        "stop_reason": "tool_use",
    }
    out = f.on_message(msg)
    assert out["content"] == [{"type": "text", "text": "let me look"}, {"type": "text", "text": refusal("WebFetch")}]
    assert out["stop_reason"] == "end_turn" and f.refused == ["WebFetch"]
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}
    assert f.on_message(error) is error
