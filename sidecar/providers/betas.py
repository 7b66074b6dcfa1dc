"""`anthropic-beta` flags for the clouds that serve Claude (Bedrock, Vertex), and the body
changes a dropped flag requires.

Claude Code believes it talks to Anthropic and sends every beta it uses; Bedrock and Vertex
reject flags they do not know. The sidecar keeps only the flags a cloud accepts (the
`betas` option of a provider adds more), and where a dropped flag had switched on a body
field, the field is adapted so the request stays valid:

- `context-management-*` dropped: `context_management` is removed;
- `effort-*` dropped: `output_config.effort` is removed;
- `structured-outputs-*` dropped: `output_config.format` is removed;
- `mid-conversation-system-*` dropped: each `{"role": "system"}` message inside `messages`
  becomes a `<system-reminder>` text block of a user turn (merged with a neighbouring user
  turn), which is how Claude Code itself sends that text to models without the beta.

Everything else in the body is left exactly as the client sent it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sidecar.protocol import foreign
from sidecar.protocol.system import fold_system_messages

# Flags Bedrock's InvokeModel accepts for Claude (in `anthropic_beta`).
BEDROCK_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "effort-2025-11-24",
        "fine-grained-tool-streaming-2025-05-14",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "token-efficient-tools-2025-02-19",
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
        "compact-2026-01-12",
    }
)

# Flags Vertex AI accepts for Claude (header and `anthropic_beta`).
VERTEX_BETAS = frozenset(
    {
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "interleaved-thinking-2025-05-14",
        "tool-search-tool-2025-10-19",
        "web-search-2025-03-05",
        "compact-2026-01-12",
    }
)


def parse(values: Iterable[str]) -> list[str]:
    """Flags from `anthropic-beta` header values and/or body lists: split on commas, trimmed,
    first occurrence kept."""
    out: list[str] = []
    for v in values:
        for flag in v.split(","):
            flag = flag.strip()
            if flag and flag not in out:
                out.append(flag)
    return out


def split(flags: list[str], allowed: frozenset[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped), each in the client's order."""
    return [f for f in flags if f in allowed], [f for f in flags if f not in allowed]


def body_betas(body: dict[str, Any], key: str = "anthropic_beta") -> list[str]:
    """Flags a client put in the body (a list of strings), if any."""
    raw = body.get(key)
    if isinstance(raw, list):
        return parse(str(x) for x in raw)
    if isinstance(raw, str):
        return parse([raw])
    return []


def _dropped(dropped: list[str], prefix: str) -> bool:
    return any(f.startswith(prefix) for f in dropped)


def adapt(body: dict[str, Any], kept: list[str], dropped: list[str]) -> dict[str, Any]:
    """A copy of `body` without the fields that only the dropped flags allowed (see the module
    docstring). Fields a kept flag still allows stay."""
    out = dict(body)

    def gone(prefix: str) -> bool:
        return _dropped(dropped, prefix) and not _dropped(kept, prefix)

    if gone("context-management-"):
        out.pop("context_management", None)
    oc = out.get("output_config")
    if isinstance(oc, dict):
        oc = dict(oc)
        if gone("effort-"):
            oc.pop("effort", None)
        if gone("structured-outputs-"):
            oc.pop("format", None)
        if oc:
            out["output_config"] = oc
        else:
            out.pop("output_config")
    msgs = out.get("messages")
    if isinstance(msgs, list) and any(
        isinstance(m, dict) and isinstance(m.get("content"), list) and any(foreign.is_foreign(b) for b in m["content"])
        for m in msgs
    ):
        # Thinking another provider made (OpenAI-style, Gemini) would be refused here.
        msgs = out["messages"] = [
            {**m, "content": [b for b in m["content"] if not foreign.is_foreign(b)] or [foreign.OMITTED]}
            if isinstance(m, dict) and isinstance(m.get("content"), list)
            else m
            for m in msgs
        ]
    if not _dropped(kept, "mid-conversation-system-") and isinstance(msgs, list):
        if any(isinstance(m, dict) and m.get("role") == "system" for m in msgs):
            out["messages"] = fold_system_messages(msgs)
    return out
