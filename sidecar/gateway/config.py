"""The `[claude_code]` config section: what the sidecar serves Claude Code as its gateway.

```toml
[claude_code]
otlp_forward = "https://otel.example.com"   # the org's OTLP/HTTP collector
[claude_code.settings]                      # managed-settings.json for /managed/settings
permissions = { deny = ["Bash(rm -rf *)"] }
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sidecar.configread import Reader


@dataclass(frozen=True)
class ClaudeCodeConfig:
    """[claude_code]: what the sidecar serves Claude Code as its gateway. `settings` is the
    managed-settings.json for /managed/settings (permissions, env, model choices, ...); None
    means no managed policy (a 404), which differs from an empty table (an empty policy).
    `otlp_forward` is the org's OTLP/HTTP collector (its base URL) that Claude Code's own
    telemetry is also sent to, as received."""

    settings: dict[str, Any] | None = None
    otlp_forward: str | None = None


def read_claude_code(r: Reader, data: Any) -> ClaudeCodeConfig:
    """Validate the `[claude_code]` table."""
    d = r.table(data, "claude_code", {"settings", "otlp_forward"})
    settings = r.get(d, "claude_code", "settings", dict, None)
    forward = r.get(d, "claude_code", "otlp_forward", str, None)
    if forward is not None and not re.match(r"^https?://[^/\s]+", forward):
        raise r.fail("claude_code.otlp_forward", f"{forward!r} is not an http(s) URL of an OTLP collector")
    return ClaudeCodeConfig(settings=settings, otlp_forward=forward.rstrip("/") if forward else None)
