"""The sync's migrations: the usage outbox (`sync_meta`, `outbox`, `outbox_parked`).

Named, append-only migrations of the sidecar's sqlite store; the one ordered list that
applies them is MIGRATIONS in sidecar.ledger.store. Never edit, rename or reorder a
migration that has shipped: add a new one, and append it to that list.
"""

from __future__ import annotations

import sqlite_utils


def m007_sync_outbox(db: sqlite_utils.Database) -> None:
    """The usage outbox (sidecar.sync.outbox): while `sync_meta` holds the key 'outbox' (the
    device is enrolled), a trigger queues every new usage row in the same transaction that
    writes it, whoever writes it (the ledger's batches, the journal's recovery). A row that
    is not inserted (INSERT OR IGNORE of a known id) fires no trigger, so is never queued
    twice. Rows the server refuses for good are parked in `outbox_parked`, not retried."""
    db.execute("CREATE TABLE sync_meta (key TEXT PRIMARY KEY, value TEXT)")
    db.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, usage_id TEXT NOT NULL)")
    db.execute(
        "CREATE TABLE outbox_parked (usage_id TEXT PRIMARY KEY, parked_at REAL NOT NULL, reason TEXT NOT NULL)"
    )
    db.execute(
        "CREATE TRIGGER usage_outbox AFTER INSERT ON usage "
        "WHEN EXISTS (SELECT 1 FROM sync_meta WHERE key = 'outbox') "
        "BEGIN INSERT INTO outbox (usage_id) VALUES (NEW.id); END"
    )
