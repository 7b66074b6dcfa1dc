"""An incremental check that streamed text is still the beginning of a valid JSON value.

Tool-call arguments stream to the client piece by piece and clients parse what they have
so far (the Anthropic SDKs raise on text that can no longer become JSON). Open models
sometimes write Python-style or otherwise broken JSON; the translator streams each piece
only while the arguments are a valid JSON prefix, holds the rest, and repairs at the end.
One pass over each character: O(1) per character, whatever the arguments' length.
"""

from __future__ import annotations

_WS = frozenset(" \t\r\n")
_NUMBER = frozenset("0123456789+-.eE")
_LITERALS = {"t": "true", "f": "false", "n": "null"}
_HEX = frozenset("0123456789abcdefABCDEF")
# States in which the text so far can be completed by closing it (no key or value missing).
_CLOSABLE = frozenset({"string", "literal", "after", "number", "value_or_end", "key_or_end"})


class JsonPrefix:
    """Feed text; learn how much of it keeps the whole a valid JSON prefix."""

    __slots__ = ("_literal", "_state", "_unicode", "consumed", "safe", "stack", "valid")

    def __init__(self) -> None:
        self.stack: list[str] = []  # open containers: "{" or "["
        # value | value_or_end | key_or_end | key | colon | after | string | key_string |
        # escape | key_escape | unicode_string | unicode_key_string | number | literal
        self._state = "value"
        self._literal = ""  # the rest of true / false / null still expected
        self._unicode = 0  # hex digits still expected after \u
        self.valid = True
        self.consumed = 0  # characters accepted so far
        self.safe = 0  # the longest accepted prefix that `closing` can complete

    def feed(self, text: str) -> int:
        """How many leading characters of `text` keep the prefix valid (len(text) if all)."""
        if not self.valid:
            return 0
        for i, ch in enumerate(text):
            if not self._step(ch):
                self.valid = False
                return i
            self.consumed += 1
            if self._state in _CLOSABLE and (self._state != "number" or ch.isdigit()):
                self.safe = self.consumed
        return len(text)

    def closing(self) -> str | None:
        """The shortest text that completes the value (closing a string, a literal and the
        open containers), or None when it cannot be completed without inventing content."""
        if not self.valid:
            return None
        s = self._state
        if s not in _CLOSABLE:
            return None  # a key or a value is missing
        tail = '"' if s == "string" else self._literal if s == "literal" else ""
        return tail + "".join("}" if c == "{" else "]" for c in reversed(self.stack))

    def _step(self, ch: str) -> bool:
        s = self._state
        if s in ("string", "key_string"):
            if ch == "\\":
                self._state = "escape" if s == "string" else "key_escape"
            elif ch == '"':
                self._state = "after" if s == "string" else "colon"
            elif ch < " ":
                return False
            return True
        if s in ("escape", "key_escape"):
            back = "string" if s == "escape" else "key_string"
            if ch == "u":
                self._unicode, self._state = 4, "unicode_" + back
                return True
            self._state = back
            return ch in '"\\/bfnrt'
        if s.startswith("unicode_"):
            if ch not in _HEX:
                return False
            self._unicode -= 1
            if not self._unicode:
                self._state = s.removeprefix("unicode_")
            return True
        if s == "literal":
            if ch != self._literal[0]:
                return False
            self._literal = self._literal[1:]
            if not self._literal:
                self._state = "after"
            return True
        if s == "number":
            if ch in _NUMBER:
                return True
            self._state = "after"
            return self._step(ch)
        if ch in _WS:
            return True
        if s == "value":
            return self._value(ch)
        if s == "value_or_end":
            return self._close("[") if ch == "]" else self._value(ch)
        if s in ("key_or_end", "key"):
            if ch == '"':
                self._state = "key_string"
                return True
            if ch == "}" and s == "key_or_end":
                return self._close("{")
            return False
        if s == "colon":
            if ch == ":":
                self._state = "value"
                return True
            return False
        if s == "after":
            if not self.stack:
                return False  # one value only
            if ch == ",":
                self._state = "key" if self.stack[-1] == "{" else "value"
                return True
            return self._close("{" if ch == "}" else "[" if ch == "]" else "")
        return False

    def _value(self, ch: str) -> bool:
        if ch == "{":
            self.stack.append("{")
            self._state = "key_or_end"
        elif ch == "[":
            self.stack.append("[")
            self._state = "value_or_end"
        elif ch == '"':
            self._state = "string"
        elif ch in _LITERALS:
            self._literal, self._state = _LITERALS[ch][1:], "literal"
        elif ch in "-0123456789":
            self._state = "number"
        else:
            return False
        return True

    def _close(self, kind: str) -> bool:
        if not kind or not self.stack or self.stack[-1] != kind:
            return False
        self.stack.pop()
        self._state = "after"
        return True


def close_prefix(raw: str) -> str | None:
    """The longest beginning of `raw` that is valid JSON once closed, closed; None if there
    is none (the arguments of a call cut short, or with junk after a good part)."""
    scan = JsonPrefix()
    scan.feed(raw)
    if not scan.safe:
        return None
    head = raw[: scan.safe]
    again = JsonPrefix()
    again.feed(head)
    tail = again.closing()
    return None if tail is None else head + tail
