"""The response cache's migrations: `cache_entries`, `cache_stats`, `cache_shadow`.

Named, append-only migrations of the sidecar's sqlite store; the one ordered list that
applies them is MIGRATIONS in sidecar.ledger.store. Never edit, rename or reorder a
migration that has shipped: add a new one, and append it to that list.
"""

from __future__ import annotations

import sqlite_utils


def m003_cache_entries(db: sqlite_utils.Database) -> None:
    """The response cache (sidecar.cache): stored answers with their keys and prompt
    embedding, cumulative counters, and the would-be hits of shadow mode."""
    entries = db.table("cache_entries")
    entries.create(
        {
            "exact_key": str,
            "prefix_key": str,
            "bucket_key": str,
            "query": str,
            "embedding": bytes,
            "message": bytes,
            "volatile": str,
            "model": str,
            "provider": str,
            "input_tokens": int,
            "output_tokens": int,
            "cache_read_tokens": int,
            "cache_write_tokens": int,
            "cost_usd": float,
            "semantic_ok": int,
            "created_at": float,
            "used_at": float,
            "hits": int,
            "size": int,
        },
        pk="exact_key",
        not_null={"exact_key", "prefix_key", "message", "created_at", "used_at", "hits", "size"},
    )
    entries.create_index(["used_at"], index_name="idx_cache_entries_used_at")
    entries.create_index(["created_at"], index_name="idx_cache_entries_created_at")
    db.table("cache_stats").create({"name": str, "value": float}, pk="name", not_null={"name", "value"})
    db.table("cache_shadow").create(
        {
            "request_id": str,
            "ts": float,
            "entry_key": str,
            "similarity": float,
            "query": str,
            "candidate_query": str,
            "agreement": float,
        },
        pk="request_id",
        not_null={"request_id", "ts", "entry_key", "similarity"},
    )
