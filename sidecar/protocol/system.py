"""System messages inside `messages`, folded for upstreams that accept none there.

Claude Code may put a `role: system` message mid-conversation; Anthropic-speaking upstreams
that refuse it (sidecar.providers.betas) and Gemini (sidecar.protocol.gemini) get it as a
`<system-reminder>` text block of a user turn instead.
"""

from __future__ import annotations

import copy
from typing import Any

SYSTEM_REMINDER = "<system-reminder>\n{}\n</system-reminder>"


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


def _system_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = [b.get("text", "") for b in _blocks(content) if isinstance(b, dict) and b.get("type") == "text"]
    return "\n\n".join(p for p in parts if p)


def fold_system_messages(messages: list[Any]) -> list[Any]:
    """`messages` with every `role: system` message turned into a `<system-reminder>` text
    block of a user turn; adjacent user turns are merged so roles still alternate."""
    out: list[Any] = []
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "system":
            text = _system_text(m.get("content"))
            if not text:
                continue
            m = {"role": "user", "content": [{"type": "text", "text": SYSTEM_REMINDER.format(text)}]}
        prev = out[-1] if out else None
        if (
            isinstance(m, dict) and isinstance(prev, dict)
            and m.get("role") == "user" and prev.get("role") == "user"
        ):  # fmt: skip
            out[-1] = {**prev, "content": _blocks(prev.get("content")) + _blocks(m.get("content"))}
        else:
            out.append(m)
    return copy.copy(out)
