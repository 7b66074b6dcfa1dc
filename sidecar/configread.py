"""The strict reader every config section parser uses (sidecar/config.py assembles them).

A `Reader` walks the parsed TOML and turns each problem into a ConfigError that names the
file, the dotted key, its line when it can be found, and why. It imports nothing of the
sidecar but its errors, so each section's parser can sit next to the code that owns it
(`sidecar/providers/config.py`, `sidecar/policy/config.py`, ...) without import circles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sidecar.errors import ConfigError

# A name the config gives something (a provider, a custom guardrail): lower case, short.
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Reader:
    """Walks the parsed TOML, turning each problem into a ConfigError that names the key."""

    def __init__(self, path: Path | None, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, key: str, reason: str) -> ConfigError:
        """The error for `key`, located in the file."""
        where = str(self.path) if self.path else "<config>"
        line = line_of(self.text, key)
        loc = f"{where}:{line}" if line else where
        return ConfigError(f"{loc}: {key}: {reason}")

    def table(self, data: Any, key: str, allowed: set[str]) -> dict[str, Any]:
        """`data` as a table holding only `allowed` keys."""
        if not isinstance(data, dict):
            raise self.fail(key, f"must be a table, not {kind_name(data)}")
        for k in data:
            if k not in allowed:
                raise self.fail(
                    f"{key}.{k}" if key else k,
                    f"unknown key (expected one of: {', '.join(sorted(allowed))})",
                )
        return data

    def get(self, data: dict[str, Any], key: str, name: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """`data[name]` checked to be of `kind`, or `default` when it is not there."""
        if name not in data:
            return default
        value = data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a port of `true` is still wrong.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(f"{key}.{name}", f"must be {_names(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(f"{key}.{name}", f"must be {_names(kinds)}, not {kind_name(value)}")
        return value


def globs(r: Reader, d: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    """`d[name]` as a list of non-empty strings (names or globs); empty when not there."""
    items = r.get(d, key, name, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise r.fail(f"{key}.{name}", f"entry {i} ({item!r}) must be a non-empty string")
    return tuple(items)


def kind_name(v: Any) -> str:
    """What a TOML value is, in words ("a table", "an integer")."""
    return {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(kind_name(k()) for k in kinds)


_KEY_PART = re.compile(r'"[^"]*"|\[\d+\]|[^."\[\]\s]+')
_HEADER = re.compile(r"^\s*\[\[?([^\[\]]*)\]\]?\s*(?:#.*)?$")


def _header(line: str) -> list[str] | None:
    """The table path a header line opens (`[pricing."a.b"]` -> ['pricing', 'a.b']), or None."""
    m = _HEADER.match(line)
    return [p.strip('"') for p in _KEY_PART.findall(m.group(1))] if m else None


def line_of(text: str, key: str) -> int | None:
    """Best-effort line of a dotted key like `providers[1].type` or `pricing."m"` in the TOML text."""
    parts = [p.strip('"') for p in _KEY_PART.findall(key)]
    lines = text.splitlines()
    headers = [_header(line) for line in lines]
    table: list[str] = []
    start, found = 0, None
    for n, part in enumerate(parts):
        if re.fullmatch(r"\[\d+\]", part):
            hits = [i for i in range(start, len(lines)) if headers[i] == table and lines[i].lstrip().startswith("[[")]
            if int(part[1:-1]) >= len(hits):
                return found
            start = found = hits[int(part[1:-1])] + 1
            continue
        # A key of the current table: search only up to the next table header.
        end = next((i for i in range(start, len(lines)) if headers[i] is not None), len(lines))
        for i in range(start, end):
            if re.match(rf'^\s*"?{re.escape(part)}"?\s*=', lines[i]):
                return i + 1
        table.append(part)
        hit = next((i for i in range(start, len(lines)) if headers[i] == table), None)
        followed_by_index = n + 1 < len(parts) and parts[n + 1].startswith("[")
        if hit is not None and not followed_by_index:
            start = found = hit + 1
    return found
