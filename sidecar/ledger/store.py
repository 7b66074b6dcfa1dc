"""The sqlite store: opening it (WAL, busy timeout) and applying its named, append-only migrations.

Migrations follow simonw/llm: each is a function named ``mNNN_what_it_does``, kept by the
package whose tables it makes (``sidecar/<package>/migrations.py``), and listed once, in
order, in MIGRATIONS below; ``open_db`` applies the ones not yet listed in ``_migrations``,
in that order, each exactly once. Never edit or reorder a migration that has shipped; add a
new one at the end.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from sidecar.audit import migrations as audit
from sidecar.cache import migrations as cache
from sidecar.gateway import migrations as gateway
from sidecar.ledger import migrations as ledger
from sidecar.sync import migrations as sync

MIGRATIONS_TABLE = "_migrations"
BUSY_TIMEOUT_MS = 5000

Migration = Callable[[sqlite_utils.Database], None]
# The one ordered list of migrations applied to the store. Each package owns the migrations
# of its own tables (its `migrations.py`); a migration's function name is its permanent id,
# recorded in `_migrations`. Append only: never rename, reorder or drop a shipped one.
MIGRATIONS: list[Migration] = [
    ledger.m001_create_usage,
    ledger.m002_routing_and_cache_columns,
    cache.m003_cache_entries,
    audit.m004_create_audit,
    gateway.m005_claude_code_events,
    ledger.m006_index_usage_upstream_request_id,
    sync.m007_sync_outbox,
]


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
