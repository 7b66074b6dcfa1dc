"""Guardrails on outgoing prompts: find secrets, personal data and custom matches in the
text of a Messages request, then block it, redact the matches, or let it pass with a warning.

What is scanned: the system prompt, and in every message the text blocks, tool results
(string or text blocks), tool_use inputs (every string in them) and plain-text documents.
Never touched: thinking blocks (their signature covers the text), images, base64 documents,
tool definitions.

Redaction replaces a match with ``[REDACTED:<detector>:<8 hex>]``, the hex being an HMAC of
the value under a key kept in the data dir. The same secret therefore gets the same
placeholder on every turn of a conversation (and across restarts), so the request prefix
stays byte-stable and the provider's prompt cache keeps hitting; only the strings that
held a match change.

Scanning is memoised per string: Claude Code resends the whole conversation every turn,
and a string already scanned costs one dict lookup.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sidecar.policy.config import GuardrailsConfig
from sidecar.policy.detectors import DETECTORS, Detector, custom

PLACEHOLDER_PREFIX = "[REDACTED:"
_MEMO_ENTRIES = 4096
_MEMO_CHARS = 16_000_000  # strings kept as memo keys, in characters
_MEMO_MIN = 64  # shorter strings are rescanned (hashing them costs about as much)


@dataclass(frozen=True)
class Rule:
    """A detector and the mode it runs in (warn, redact or block)."""

    detector: Detector
    mode: str


@dataclass(frozen=True)
class Hit:
    """A match of one rule in one string."""

    rule: Rule
    start: int
    end: int


@dataclass
class Finding:
    """All hits of one rule at one place in the request (for decisions and messages)."""

    rule: Rule
    where: str
    count: int = 1


@dataclass
class Outcome:
    """What the guardrails found in a request, and whether they changed it."""

    blocked: list[Finding] = field(default_factory=list)
    redacted: list[Finding] = field(default_factory=list)
    warned: list[Finding] = field(default_factory=list)
    changed: bool = False


def rules_for(cfg: GuardrailsConfig) -> list[Rule]:
    """The active rules: every detector whose mode (its own, else its family's) is not off."""
    out: list[Rule] = []
    for d in DETECTORS.values():
        mode = cfg.detectors.get(d.name) or (cfg.secrets if d.kind == "secret" else cfg.pii)
        if mode != "off":
            out.append(Rule(d, mode))
    out.extend(Rule(custom(c.name, c.pattern), c.mode) for c in cfg.custom if c.mode != "off")
    return out


class Scanner:
    """Finds the non-overlapping hits of a set of rules in a string, with a memo."""

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._memo: OrderedDict[str, tuple[Hit, ...]] = OrderedDict()
        self._memo_chars = 0

    def scan(self, text: str) -> tuple[Hit, ...]:
        """The hits in `text`, ordered, none overlapping (block hits are always kept)."""
        if len(text) < _MEMO_MIN:
            return self._scan(text)
        hits = self._memo.get(text)
        if hits is not None:
            self._memo.move_to_end(text)
            return hits
        hits = self._scan(text)
        self._memo[text] = hits
        self._memo_chars += len(text)
        while len(self._memo) > _MEMO_ENTRIES or self._memo_chars > _MEMO_CHARS:
            old, _ = self._memo.popitem(last=False)
            self._memo_chars -= len(old)
        return hits

    def _scan(self, text: str) -> tuple[Hit, ...]:
        found = [
            Hit(rule, start, end)
            for rule in self.rules
            for start, end in rule.detector.find(text)
            if PLACEHOLDER_PREFIX not in text[start:end]
        ]
        if len(found) < 2:
            return tuple(found)
        # Earliest first; at one start the block rule, then the longest match wins.
        found.sort(key=lambda h: (h.start, h.rule.mode != "block", -h.end))
        kept: list[Hit] = []
        for h in found:
            if kept and h.start < kept[-1].end:
                if h.rule.mode == "block" and kept[-1].rule.mode != "block":
                    kept[-1] = h
                continue
            kept.append(h)
        return tuple(kept)


class Guardrails:
    """Applies the guardrail rules to a Messages request body (a parsed dict)."""

    def __init__(self, cfg: GuardrailsConfig, key: bytes) -> None:
        self.scanner = Scanner(rules_for(cfg))
        self._key = key

    @property
    def active(self) -> bool:
        """Whether any rule is on."""
        return bool(self.scanner.rules)

    def placeholder(self, rule: Rule, value: str) -> str:
        """The stable stand-in for `value`."""
        digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:8]
        return f"{PLACEHOLDER_PREFIX}{rule.detector.name}:{digest}]"

    def apply(self, body: dict[str, Any]) -> Outcome:
        """Scan `body`; redact in place unless something must block (then nothing changes)."""
        out = Outcome()
        edits: list[tuple[Any, Any, str, tuple[Hit, ...]]] = []
        for parent, key, where in _strings(body):
            text = parent[key]
            hits = self.scanner.scan(text)
            if not hits:
                continue
            for mode, bucket in (("block", out.blocked), ("redact", out.redacted), ("warn", out.warned)):
                counts = Counter(h.rule for h in hits if h.rule.mode == mode)
                bucket.extend(Finding(rule, where, n) for rule, n in counts.items())
            if any(h.rule.mode == "redact" for h in hits):
                edits.append((parent, key, text, hits))
        if out.blocked:
            return out
        for parent, key, text, hits in edits:
            parent[key] = self._redact(text, hits)
        out.changed = bool(edits)
        return out

    def _redact(self, text: str, hits: tuple[Hit, ...]) -> str:
        parts: list[str] = []
        pos = 0
        for h in hits:
            if h.rule.mode != "redact":
                continue
            parts.append(text[pos : h.start])
            parts.append(self.placeholder(h.rule, text[h.start : h.end]))
            pos = h.end
        parts.append(text[pos:])
        return "".join(parts)


Slot = tuple[Any, Any, str]  # (container, key or index, where) of one scannable string


def _strings(body: dict[str, Any]) -> Iterator[Slot]:
    """Every string of `body` that the guardrails read, with where it is."""
    system = body.get("system")
    if isinstance(system, str):
        yield body, "system", "system"
    elif isinstance(system, list):
        yield from _blocks(system, "system")
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            yield msg, "content", f"messages[{i}]"
        elif isinstance(content, list):
            yield from _blocks(content, f"messages[{i}]")


def _blocks(blocks: list[Any], where: str) -> Iterator[Slot]:
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        here = f"{where}.content[{j}]" if where.startswith("messages") else f"{where}[{j}]"
        if kind == "text" and isinstance(block.get("text"), str):
            yield block, "text", here
        elif kind == "tool_result":
            inner = block.get("content")
            if isinstance(inner, str):
                yield block, "content", here
            elif isinstance(inner, list):
                yield from _blocks(inner, here)
        elif kind in ("tool_use", "server_tool_use"):
            yield from _values(block, "input", here)
        elif kind == "document":
            source = block.get("source")
            if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
                yield source, "data", here


def _values(parent: Any, key: Any, where: str) -> Iterator[Slot]:
    """Every string inside a JSON value (a tool's input)."""
    value = parent[key]
    if isinstance(value, str):
        yield parent, key, where
    elif isinstance(value, dict):
        for k in value:
            yield from _values(value, k, where)
    elif isinstance(value, list):
        for i in range(len(value)):
            yield from _values(value, i, where)
