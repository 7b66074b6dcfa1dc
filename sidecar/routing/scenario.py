"""Scenarios derived from a request, for routes that match on them.

Only the fields the scenarios need are decoded (msgspec skips everything else without
building it), so classifying Claude Code's 76 KB main request costs tens of microseconds.

- `background`: small/fast calls: a haiku-class model, or no tools and no thinking (Claude
  Code's session-title and WebFetch-summary calls send `tools: []`).
- `subagent`: the `x-claude-code-agent-id` header is present.
- `long_context`: estimated input tokens (sidecar.providers.tokens.estimate) at or above
  `[routing] long_context_tokens`.
- `thinking`: extended thinking is on (`thinking.type` enabled or adaptive).
- `web_search`: a server tool of type `web_search_*` is offered.
- `image`: an image block appears in any message.
"""

from __future__ import annotations

import msgspec

from sidecar.pipeline import RequestContext
from sidecar.providers import tokens


class _Block(msgspec.Struct):
    type: str = ""


class _Message(msgspec.Struct):
    content: str | list[_Block] = ""


class _Tool(msgspec.Struct):
    type: str | None = None


class _Thinking(msgspec.Struct):
    type: str = ""


class _Shape(msgspec.Struct):
    model: str | None = None
    tools: list[_Tool] | None = None
    thinking: _Thinking | None = None
    messages: list[_Message] = []


_decoder = msgspec.json.Decoder(_Shape)


def estimate_input_tokens(ctx: RequestContext) -> int:
    """The request's input tokens, by the one size estimate (the policy gate's too)."""
    return tokens.estimate(ctx.body, ctx.json)


def scenarios(ctx: RequestContext, long_context_tokens: int) -> frozenset[str]:
    """The scenarios `ctx` belongs to."""
    out: set[str] = set()
    if ctx.agent_id:
        out.add("subagent")
    if estimate_input_tokens(ctx) >= long_context_tokens:
        out.add("long_context")
    try:
        shape = _decoder.decode(ctx.body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return frozenset(out)
    model = (shape.model or "").lower()
    thinking_on = shape.thinking is not None and shape.thinking.type in ("enabled", "adaptive")
    if thinking_on:
        out.add("thinking")
    if "haiku" in model or (not shape.tools and not thinking_on):
        out.add("background")
    if shape.tools and any((t.type or "").startswith("web_search") for t in shape.tools):
        out.add("web_search")
    for m in shape.messages:
        if isinstance(m.content, list) and any(b.type == "image" for b in m.content if isinstance(b, _Block)):
            out.add("image")
            break
    return frozenset(out)
