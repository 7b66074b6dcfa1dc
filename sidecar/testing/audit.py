"""Reading a sidecar's audit log from tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from sidecar.audit.verify import entries_in_db, verify
from sidecar.ledger.store import open_db


def audit_entries(home: Path) -> list[dict[str, Any]]:
    """The audit entries in the store under `home` (kind, request_id and their data), after
    checking that the hash chain verifies."""
    db = open_db(home / "data" / "sidecar.db")
    try:
        entries = list(entries_in_db(db))
        result = verify(entries)
        if not result.ok:
            raise AssertionError(f"the audit chain does not verify: {result}")
        return [{"kind": e.kind, "request_id": e.request_id, **json.loads(e.data)} for e in entries]
    finally:
        db.conn.close()


def tamper(store: Path, *statements: tuple[str, list[Any]]) -> None:
    """Edit the audit table as an attacker would: the append-only triggers go first."""
    conn = sqlite3.connect(store)
    with conn:
        conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
        conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        for statement, params in statements:
            conn.execute(statement, params)
    conn.close()
