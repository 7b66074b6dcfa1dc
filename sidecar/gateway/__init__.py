"""Claude Code's gateway protocol on the sidecar: the unified budget headers, the usage
endpoint, managed settings, model discovery and gateway sign-in (see docs/claude-code.md)."""
