"""The audit log's migrations: the hash-chained, append-only `audit` table.

Named, append-only migrations of the sidecar's sqlite store; the one ordered list that
applies them is MIGRATIONS in sidecar.ledger.store. Never edit, rename or reorder a
migration that has shipped: add a new one, and append it to that list.
"""

from __future__ import annotations

import sqlite_utils


def m004_create_audit(db: sqlite_utils.Database) -> None:
    """The hash-chained audit log (sidecar.audit): `seq` counts from 1 without gaps; rows
    are never updated or deleted (the triggers refuse it; `audit verify` catches the rest)."""
    db.table("audit").create(
        {"seq": int, "ts": float, "kind": str, "request_id": str, "data": str, "prev_hash": str, "hash": str},
        pk="seq",
        not_null={"seq", "ts", "kind", "data", "prev_hash", "hash"},
    )
    db.table("audit").create_index(["ts"], index_name="idx_audit_ts")
    for op in ("UPDATE", "DELETE"):
        db.execute(
            f"CREATE TRIGGER audit_no_{op.lower()} BEFORE {op} ON audit "
            "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"
        )
