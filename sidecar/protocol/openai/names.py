"""Tool names and tool-call ids as they cross between Anthropic and OpenAI-format servers.

Names: Chat Completions takes function names matching ^[a-zA-Z0-9_-]{1,64}$. A longer or
otherwise invalid name (long MCP tool names) is shortened deterministically, a prefix plus
a hash of the whole name, and mapped back when the model calls it.

Ids: the same id must reach the server in an assistant's tool call and in the tool message
that answers it, so request-side rewriting is a pure function of the id. Ids in answers
that a client could not send back (missing, numeric, odd characters, repeated) are replaced.
"""

from __future__ import annotations

import hashlib
import re

from sidecar.errors import InvalidRequest
from sidecar.protocol.anthropic_stream import new_id

NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_INVALID = re.compile(r"[^a-zA-Z0-9_-]")
_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
UNNAMED = "unnamed_tool"
_ALNUM = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _digest(s: str) -> int:
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:16], "big")


def wire_name(name: str) -> str:
    """The function name sent for the Anthropic tool `name` (itself when it is valid)."""
    if NAME_RE.match(name):
        return name
    clean = _INVALID.sub("_", name)[:55] or "tool"
    return f"{clean}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"


class ToolNames:
    """The names of one request: original -> wire, and back for the answer."""

    def __init__(self) -> None:
        self.to_wire: dict[str, str] = {}
        self.to_client: dict[str, str] = {}

    def add(self, name: str) -> str:
        """Register `name`; return its wire name (raises InvalidRequest on a collision)."""
        wire = self.to_wire.get(name)
        if wire is not None:
            return wire
        if not name:
            return UNNAMED  # a call with an empty name in history: servers reject ""
        wire = wire_name(name)
        other = self.to_client.get(wire)
        if other is not None and other != name:
            raise InvalidRequest(f"tool names {other!r} and {name!r} both become {wire!r} for an OpenAI-format server")
        self.to_wire[name] = wire
        self.to_client[wire] = name
        return wire

    def client(self, wire: str) -> str:
        """The client's name for a function the model called."""
        return self.to_client.get(wire, wire)


def wire_tool_id(tool_id: str, mode: str, max_length: int) -> str:
    """The id sent upstream for the client's tool-use id `tool_id` (deterministic)."""
    if mode == "keep":
        return tool_id
    if mode == "mistral":
        n = _digest(tool_id)
        out = []
        for _ in range(9):
            n, r = divmod(n, 62)
            out.append(_ALNUM[r])
        return "".join(out)
    if _ID_RE.match(tool_id) and len(tool_id) <= max_length:
        return tool_id
    return ("call_" + hashlib.sha256(tool_id.encode()).hexdigest())[: max(max_length, 12)]


def client_tool_id(raw: object, seen: set[str]) -> str:
    """A usable Anthropic tool-use id for an id from an answer (recorded in `seen`)."""
    tool_id = raw if isinstance(raw, str) else ""
    if tool_id and not _ID_RE.match(tool_id):
        tool_id = _INVALID.sub("_", tool_id)
    if not tool_id or tool_id.isdigit() or tool_id in seen:
        tool_id = new_id("toolu_")
    seen.add(tool_id)
    return tool_id
