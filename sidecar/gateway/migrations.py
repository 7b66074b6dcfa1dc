"""The gateway's migrations: `claude_code_events`, Claude Code's own telemetry.

Named, append-only migrations of the sidecar's sqlite store; the one ordered list that
applies them is MIGRATIONS in sidecar.ledger.store. Never edit, rename or reorder a
migration that has shipped: add a new one, and append it to that list.
"""

from __future__ import annotations

import sqlite_utils


def m005_claude_code_events(db: sqlite_utils.Database) -> None:
    """Claude Code's own telemetry (sidecar.gateway.telemetry): one row per event that matters
    (api_request, tool_result, tool_decision, lines of code, commits, ...), joined to the
    usage rows by `session_id` (and `prompt_id` where the client sends one)."""
    db.table("claude_code_events").create(
        {"ts": float, "session_id": str, "prompt_id": str, "kind": str, "name": str, "value": float, "attrs": str},
        not_null={"ts", "kind", "name"},
    )
    db.table("claude_code_events").create_index(["session_id", "ts"], index_name="idx_cc_events_session")
