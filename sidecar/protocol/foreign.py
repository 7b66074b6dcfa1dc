"""Thinking blocks that another provider produced must never reach an Anthropic upstream.

When a conversation moves between providers (a fallback, a route change), Claude Code
sends back the thinking blocks it received. Anthropic verifies thinking signatures and
refuses a request with one it did not make, so before a body goes to an Anthropic-speaking
upstream (Anthropic, Bedrock InvokeModel, Vertex rawPredict) the foreign blocks are dropped:

- an empty signature: reasoning translated from an OpenAI-style `reasoning_content`;
- a signature starting with ``gemini:``: a Gemini thought signature (sidecar.protocol.gemini).

A body without such a block is not decoded at all (one substring search: every marker starts
with `"signature":`, and what follows each hit is checked in place).
"""

from __future__ import annotations

from typing import Any

import msgspec

_KEY = b'"signature":'
_FOREIGN_VALUES = (b'""', b' ""', b'"gemini:', b' "gemini:')  # after _KEY: the markers of a foreign block
FOREIGN_PREFIXES = ("gemini:",)
# What an assistant turn of nothing but foreign thinking keeps (Anthropic refuses empty text).
OMITTED = {"type": "text", "text": "[reasoning from another model omitted]"}


def is_foreign(block: Any) -> bool:
    """True for a thinking block whose signature Anthropic did not make."""
    if not isinstance(block, dict) or block.get("type") != "thinking":
        return False
    sig = block.get("signature")
    return not sig or (isinstance(sig, str) and sig.startswith(FOREIGN_PREFIXES))


def marked(body: bytes) -> bool:
    """Whether `body` holds a foreign signature marker (`"signature":""`, `"signature": ""`,
    `"signature":"gemini:` or `"signature": "gemini:`), in one pass over it."""
    at = body.find(_KEY)
    while at >= 0:
        at += len(_KEY)
        if body.startswith(_FOREIGN_VALUES, at):
            return True
        at = body.find(_KEY, at)
    return False


def scrub(body: bytes) -> bytes | None:
    """`body` without foreign thinking blocks, or None when it has none (the usual case)."""
    if not marked(body):
        return None
    try:
        obj = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return None
    messages = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(messages, list):
        return None
    changed = False
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list) and any(is_foreign(b) for b in content):
            kept = [b for b in content if not is_foreign(b)]
            # A message must keep some content, and Anthropic refuses empty text blocks.
            m["content"] = kept or [dict(OMITTED)]
            changed = True
    return msgspec.json.encode(obj) if changed else None
