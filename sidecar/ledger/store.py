"""The sqlite store: opening it (WAL, busy timeout) and its named, append-only migrations.

Migrations follow simonw/llm: each is a function registered with ``@migration`` and named
``mNNN_what_it_does``; ``open_db`` applies the ones not yet listed in ``_migrations``, in
order, each exactly once. Never edit or reorder a migration that has shipped; add a new one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

MIGRATIONS_TABLE = "_migrations"
BUSY_TIMEOUT_MS = 5000

Migration = Callable[[sqlite_utils.Database], None]
MIGRATIONS: list[Migration] = []


def migration(fn: Migration) -> Migration:
    """Register `fn` as the next migration; its function name is its permanent id."""
    MIGRATIONS.append(fn)
    return fn


@migration
def m001_create_usage(db: sqlite_utils.Database) -> None:
    """One row per proxied request, with exactly the fields of UsageRecord (as of m001)."""
    usage = db.table("usage")
    usage.create(
        {
            "id": str,
            "ts": float,
            "endpoint": str,
            "requested_model": str,
            "provider": str,
            "upstream_model": str,
            "stream": int,
            "session_id": str,
            "agent_id": str,
            "route": str,
            "status": int,
            "outcome": str,
            "error_type": str,
            "stop_reason": str,
            "input_tokens": int,
            "output_tokens": int,
            "cache_read_tokens": int,
            "cache_write_tokens": int,
            "cost_usd": float,
            "latency_ms": float,
            "ttft_ms": float,
            "request_bytes": int,
            "response_bytes": int,
            "upstream_request_id": str,
        },
        pk="id",
        not_null={"id", "ts", "endpoint", "provider", "stream", "status", "outcome"},
    )
    usage.create_index(["ts"], index_name="idx_usage_ts")
    usage.create_index(["session_id"], index_name="idx_usage_session_id")
    usage.create_index(["requested_model"], index_name="idx_usage_requested_model")


@migration
def m002_routing_and_cache_columns(db: sqlite_utils.Database) -> None:
    """Which target served (provider/model#key), how many attempts, the fallback taken, the cache outcome."""
    usage = db.table("usage")
    usage.add_column("target", str)
    usage.add_column("attempts", int)
    usage.add_column("fallback", str)
    usage.add_column("cache_outcome", str)
    usage.add_column("saved_usd", float)


@migration
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



@migration
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


@migration
def m005_claude_code_events(db: sqlite_utils.Database) -> None:
    """Claude Code's own telemetry (sidecar.gateway.telemetry): one row per event that matters
    (api_request, tool_result, tool_decision, lines of code, commits, ...), joined to the
    usage rows by `session_id` (and `prompt_id` where the client sends one)."""
    db.table("claude_code_events").create(
        {"ts": float, "session_id": str, "prompt_id": str, "kind": str, "name": str, "value": float, "attrs": str},
        not_null={"ts", "kind", "name"},
    )
    db.table("claude_code_events").create_index(["session_id", "ts"], index_name="idx_cc_events_session")


@migration
def m006_index_usage_upstream_request_id(db: sqlite_utils.Database) -> None:
    """Telemetry joins usage rows by the upstream's request id: without an index every
    report scanned the whole ledger (about 0.6 s at 200k rows, 30 ms with it)."""
    db.table("usage").create_index(["upstream_request_id"], index_name="idx_usage_upstream_request_id")


@migration
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


def open_db(path: Path) -> sqlite_utils.Database:
    """Open (creating if needed) the store at `path`, in WAL mode, with every migration applied."""
    _create_private(path)
    # check_same_thread=False: the ledger hands the connection to worker threads, one at a
    # time; sqlite itself is built thread-safe (serialized).
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; a commit is no fsync
        migrate(db)
    except BaseException:
        conn.close()
        raise
    return db


def applied_migrations(db: sqlite_utils.Database) -> set[str]:
    """Names of the migrations already applied to `db`."""
    if not db[MIGRATIONS_TABLE].exists():
        return set()
    return {row[0] for row in db.execute(f"SELECT name FROM {MIGRATIONS_TABLE}").fetchall()}


def migrate(db: sqlite_utils.Database) -> list[str]:
    """Apply pending migrations in order; return the names applied now (usually none)."""
    if applied_migrations(db) >= {m.__name__ for m in MIGRATIONS}:
        return []  # the common case: one cheap read, no write lock
    # IMMEDIATE takes the write lock up front, so two processes opening a fresh file at
    # once queue on the busy timeout instead of both migrating (or deadlocking on upgrade).
    db.execute("BEGIN IMMEDIATE")
    try:
        if not db[MIGRATIONS_TABLE].exists():
            db.table(MIGRATIONS_TABLE).create({"name": str, "applied_at": str}, pk="name")
        done = applied_migrations(db)
        applied: list[str] = []
        for fn in MIGRATIONS:
            if fn.__name__ in done:
                continue
            fn(db)
            db.execute(
                f"INSERT INTO {MIGRATIONS_TABLE} (name, applied_at) VALUES (?, ?)",
                [fn.__name__, datetime.now(UTC).isoformat(timespec="seconds")],
            )
            applied.append(fn.__name__)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return applied


def _create_private(path: Path) -> None:
    """Create missing parent directories (0700) and the file itself (0600)."""
    missing: list[Path] = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        d.mkdir(mode=0o700, exist_ok=True)
    # sqlite gives the -wal and -shm files the database file's permissions. Only a file that
    # does not exist yet is opened here (O_EXCL): closing any descriptor of a file releases
    # every POSIX lock this process holds on it, its sqlite connections' locks included, and
    # a reader in another process would then take the daemon's WAL for orphaned and delete it
    # (SQLite's "posix advisory locks" pitfall). Never open a plain descriptor on the store.
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        return
    os.close(fd)
