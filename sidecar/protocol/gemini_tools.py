"""Anthropic tool definitions and tool_choice -> Gemini `tools` and `toolConfig`, and the
tool names Gemini is sent.

Gemini takes function names of at most 64 characters that start with a letter or an
underscore and hold only letters, digits, `_ . : -`. Other names (long MCP tool names)
get a deterministic alias, a cleaned prefix plus a hash of the whole name, which the
response side maps back (`ToolNames`). Anthropic's web search becomes Gemini's
`googleSearch`; other server tools have no Gemini form and are refused with a 400.
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import Any

import msgspec

from sidecar.errors import InvalidRequest
from sidecar.protocol.gemini_schema import Inexpressible, json_schema, to_gemini

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,63}$")


class ToolNames:
    """Client tool names and the names Gemini is sent (an alias where Gemini would refuse one)."""

    def __init__(self) -> None:
        self._alias: dict[str, str] = {}
        self._client: dict[str, str] = {}

    def alias(self, name: str) -> str:
        """The name Gemini sees for the client's `name` (the same every time)."""
        if name in self._alias:
            return self._alias[name]
        out = name
        if not NAME_RE.match(name) or name in self._client:
            out = re.sub(r"[^A-Za-z0-9_.:-]", "_", name) or "unnamed_tool"
            if not re.match(r"[A-Za-z_]", out[:1]):
                out = "_" + out
            if len(out) > 64 or out in self._client:
                out = out[:55] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
        self._alias[name] = out
        self._client[out] = name
        return out

    def original(self, alias: str) -> str:
        """The client's name for a name Gemini used."""
        return self._client.get(alias, alias)


def translate_tools(tools: Any, names: ToolNames) -> tuple[list[dict[str, Any]], bool]:
    """Gemini `tools` for Anthropic `tools`, and whether any function is declared."""
    if tools is None:
        return [], False
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list")
    decls: list[dict[str, Any]] = []
    extra: list[dict[str, Any]] = []
    for k, t in enumerate(tools):
        if not isinstance(t, dict):
            raise InvalidRequest(f"tools[{k}] must be an object")
        kind = t.get("type")
        if kind in (None, "custom"):
            decls.append(_declaration(k, t, names))
        elif isinstance(kind, str) and kind.startswith("web_search_"):
            extra.append({"googleSearch": {}})
        else:
            raise InvalidRequest(f"tools[{k}] is Anthropic's server tool {kind!r}, which Gemini does not offer")
    out = ([{"functionDeclarations": decls}] if decls else []) + extra[:1]
    return out, bool(decls)


def _declaration(k: int, t: dict[str, Any], names: ToolNames) -> dict[str, Any]:
    name = t.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"tools[{k}] needs a name")
    decl: dict[str, Any] = {"name": names.alias(name)}
    if isinstance(t.get("description"), str) and t["description"]:
        decl["description"] = t["description"]
    schema = t.get("input_schema", {"type": "object"})
    if not isinstance(schema, dict):
        raise InvalidRequest(f"tools[{k}].input_schema must be a JSON Schema object")
    field, params = _parameters(msgspec.json.encode(schema))
    if params is not None:
        decl[field] = params
    return decl


@functools.lru_cache(maxsize=1024)
def _parameters(schema_json: bytes) -> tuple[str, Any]:
    """The declaration field and value for a tool schema. Cached: Claude Code sends the same
    tools on every call, and cleaning them is most of a translation's cost. The values are
    shared between requests and must not be changed."""
    schema = msgspec.json.decode(schema_json)
    try:
        return "parameters", to_gemini(schema)
    except Inexpressible:
        return "parametersJsonSchema", json_schema(schema)


def tool_config(choice: Any, names: ToolNames) -> dict[str, Any]:
    """Gemini `toolConfig` for an Anthropic `tool_choice` (the parallel-use flag has no equivalent)."""
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        return {"functionCallingConfig": {"mode": "AUTO"}}
    if kind == "any":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if kind == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if kind == "tool" and isinstance(choice.get("name"), str):
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [names.alias(choice["name"])]}}
    raise InvalidRequest(f"tool_choice {choice!r} is not auto, any, none or tool with a name")
