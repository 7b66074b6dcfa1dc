"""Tool rules: which tools the model is offered, and what happens to a call of a denied one.

A tool is denied when a `deny` glob matches its name, or when there is an `allow` list and
no glob of it matches (MCP tools are named `mcp__<server>__<tool>`, so `mcp__github__*`
covers a whole server). Denied tools are removed from the request's `tools` array. If the
model calls one anyway (it knows Claude Code's tool names), the `tool_use` block is turned
into a text block that says the call was refused, so Claude Code never runs it and the
model reads why on the next turn; when no allowed call is left, `stop_reason` becomes
`end_turn`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from sidecar.errors import PolicyDenied
from sidecar.policy.config import ToolsConfig


def refusal(name: str) -> str:
    """The text that stands in for a refused tool call."""
    return (
        f"[claude-sidecar] The call to the tool `{name}` was refused by the organization's tool "
        "policy and was not executed. Continue without this tool."
    )


class ToolRules:
    """Allow and deny globs over tool names, with a memo of the verdicts."""

    def __init__(self, cfg: ToolsConfig) -> None:
        self.allow = cfg.allow
        self.deny = cfg.deny
        self._verdicts: dict[str, bool] = {}

    @property
    def active(self) -> bool:
        """Whether any rule is set."""
        return bool(self.allow or self.deny)

    def allowed(self, name: str) -> bool:
        """Whether the tool called `name` may be offered and called."""
        verdict = self._verdicts.get(name)
        if verdict is None:
            denied = any(fnmatch.fnmatchcase(name, g) for g in self.deny)
            listed = not self.allow or any(fnmatch.fnmatchcase(name, g) for g in self.allow)
            verdict = self._verdicts[name] = listed and not denied
        return verdict

    def strip(self, body: dict[str, Any]) -> list[str]:
        """Remove denied tools from `body["tools"]`; return their names.

        A `tool_choice` that forces a denied tool cannot be honoured and is refused.
        """
        tools = body.get("tools")
        if not isinstance(tools, list):
            return []
        kept, removed = [], []
        for tool in tools:
            name = tool.get("name") if isinstance(tool, dict) else None
            if isinstance(name, str) and not self.allowed(name):
                removed.append(name)
            else:
                kept.append(tool)
        choice = body.get("tool_choice")
        if isinstance(choice, dict) and choice.get("type") == "tool" and isinstance(choice.get("name"), str):
            if not self.allowed(choice["name"]):
                raise PolicyDenied(f"the request forces the tool {choice['name']!r}, which the tool policy denies")
        if removed:
            body["tools"] = kept
        return removed


class ToolUseFilter:
    """A response filter that turns calls of denied tools into readable refusals."""

    passive = False  # it rewrites events
    on_bytes = None

    def __init__(self, rules: ToolRules) -> None:
        self.rules = rules
        self.refused: list[str] = []  # names of the calls refused, in order
        self._replaced: dict[int, str] = {}  # block index -> the denied tool's name
        self._allowed_calls = 0

    def on_event(self, event: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Rewrite the events of a denied tool_use block into a text block."""
        index = data.get("index")
        if event == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(index, int):
                name = str(block.get("name"))
                if not self.rules.allowed(name):
                    self._replaced[index] = name
                    self.refused.append(name)
                    text_start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
                    return [(event, text_start)]
                self._allowed_calls += 1
        elif event == "content_block_delta" and index in self._replaced:
            return []  # the denied call's input never reaches the client
        elif event == "content_block_stop" and isinstance(index, int) and index in self._replaced:
            delta = {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": refusal(self._replaced[index])}}
            return [("content_block_delta", delta), (event, data)]
        elif event == "message_delta" and self._replaced and not self._allowed_calls:
            stop = data.get("delta")
            if isinstance(stop, dict) and stop.get("stop_reason") == "tool_use":
                data = {**data, "delta": {**stop, "stop_reason": "end_turn"}}
        return [(event, data)]

    def on_message(self, message: dict[str, Any]) -> dict[str, Any]:
        """Rewrite denied tool_use blocks of a whole message."""
        content = message.get("content")
        if not isinstance(content, list):
            return message
        out, allowed = [], 0
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_use":
                name = str(block.get("name"))
                if not self.rules.allowed(name):
                    self.refused.append(name)
                    out.append({"type": "text", "text": refusal(name)})
                    continue
                allowed += 1
            out.append(block)
        if not self.refused:
            return message
        message = {**message, "content": out}
        if not allowed and message.get("stop_reason") == "tool_use":
            message["stop_reason"] = "end_turn"
        return message

    def on_end(self, complete: bool) -> None:
        """Nothing to finish."""
