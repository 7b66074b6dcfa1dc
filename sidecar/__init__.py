"""claude-sidecar: a per-developer localhost proxy between Claude Code and model providers."""

from __future__ import annotations

__version__ = "0.1.0"
