"""Requests captured from the real Claude Code CLI (../shared/fixtures/claude-code).

The repo's checkout sits beside `shared/` (in development and in CI);
`CLAUDE_SIDECAR_SHARED` names another place.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set by the transport, not by the client: never replayed as captured.
NOT_REPLAYED = frozenset({"host", "content-length", "connection", "accept-encoding"})


def shared_dir() -> Path:
    """The shared/ folder beside the repo (or CLAUDE_SIDECAR_SHARED)."""
    env = os.environ.get("CLAUDE_SIDECAR_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared"


def captures_dir() -> Path:
    """The folder of captured Claude Code requests."""
    return shared_dir() / "fixtures" / "claude-code"


@dataclass(frozen=True)
class Capture:
    """One captured request: where it went, its headers and its body as bytes."""

    name: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    data: dict[str, Any]

    @property
    def target(self) -> str:
        """Path and query, as the client sent them."""
        return f"{self.path}?{self.query}" if self.query else self.path


def load(name_or_path: str | Path) -> Capture:
    """Load a capture by file name stem (`main-turn-opus`) or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = captures_dir() / f"{name_or_path}.json"
    cap = json.loads(path.read_text())
    body = json.dumps(cap["body"], separators=(",", ":"), ensure_ascii=False).encode()
    headers = [(k, v) for k, v in cap["headers"] if k.lower() not in NOT_REPLAYED]
    return Capture(path.stem, cap["path"], cap.get("query", ""), headers, body, cap)


def all_captures() -> list[Path]:
    """Every capture file, sorted by name."""
    return sorted(captures_dir().glob("*.json"))
