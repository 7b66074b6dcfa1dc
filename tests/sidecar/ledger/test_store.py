"""The sqlite store: creation, WAL, migrations applied once, and concurrent use."""

from __future__ import annotations

import dataclasses
import stat
import subprocess
import sys
import threading
from pathlib import Path

from sidecar.ledger.record import UsageRecord, new_ulid
from sidecar.ledger.store import MIGRATIONS, migrate, open_db


def _row(ts: float, i: int = 0) -> dict[str, object]:
    rec = UsageRecord(
        id=new_ulid(ts),
        ts=ts,
        endpoint="/v1/messages",
        requested_model="claude-opus-4-8",
        provider="anthropic",
        upstream_model="claude-opus-4-8",
        stream=True,
        input_tokens=i,
    )
    return rec.to_dict()


def test_open_creates_private_file_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sidecar.db"
    db = open_db(path)
    try:
        assert db.journal_mode == "wal"
        assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    finally:
        db.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "a" / "b").stat().st_mode) == 0o700


def test_usage_table_has_exactly_the_record_fields(tmp_path: Path) -> None:
    db = open_db(tmp_path / "s.db")
    try:
        columns = [c.name for c in db.table("usage").columns]
        assert columns == [f.name for f in dataclasses.fields(UsageRecord)]
        assert db.table("usage").pks == ["id"]
        indexed = {tuple(ix.columns) for ix in db.table("usage").indexes}
        assert {("ts",), ("session_id",), ("requested_model",)} <= indexed
    finally:
        db.close()


def test_migrations_are_recorded_once_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = open_db(path)
    first = list(db.query("SELECT name, applied_at FROM _migrations ORDER BY rowid"))
    db.table("usage").insert(_row(1_700_000_000.0))
    db.close()
    assert [r["name"] for r in first] == [m.__name__ for m in MIGRATIONS]
    assert first[0]["name"] == "m001_create_usage"

    db = open_db(path)
    try:
        assert list(db.query("SELECT name, applied_at FROM _migrations ORDER BY rowid")) == first
        assert migrate(db) == []
        assert db.table("usage").count == 1
    finally:
        db.close()


_OPENER = """
import sys
from pathlib import Path
from sidecar.ledger.store import open_db
db = open_db(Path(sys.argv[1]))
db.close()
"""


def test_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    path = tmp_path / "race" / "s.db"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _OPENER, str(path)], stderr=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    db = open_db(path)
    try:
        names = [r["name"] for r in db.query("SELECT name FROM _migrations")]
        assert names == [m.__name__ for m in MIGRATIONS]
    finally:
        db.close()


def test_a_reader_sees_consistent_data_while_a_writer_commits(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    open_db(path).close()
    batches, per_batch = 40, 25
    errors: list[BaseException] = []

    def write() -> None:
        db = open_db(path)
        try:
            for b in range(batches):
                with db.atomic():
                    db.table("usage").insert_all(
                        _row(1_700_000_000.0 + b, i) for i in range(per_batch)
                    )
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)
        finally:
            db.close()

    writer = threading.Thread(target=write)
    reader = open_db(path)
    try:
        writer.start()
        seen = []
        while writer.is_alive():
            seen.append(reader.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
        writer.join()
        seen.append(reader.execute("SELECT COUNT(*) FROM usage").fetchone()[0])
    finally:
        reader.close()
    assert not errors
    assert all(n % per_batch == 0 for n in seen), "a reader saw half a transaction"
    assert seen == sorted(seen)
    assert seen[-1] == batches * per_batch


# The shipped migrations, in order, and the package that owns each one's tables. A name
# is permanent (a database lists the names it has applied): never rename, reorder or drop
# one; append new ones at the end.
SHIPPED = [
    ("m001_create_usage", "sidecar.ledger.migrations"),
    ("m002_routing_and_cache_columns", "sidecar.ledger.migrations"),
    ("m003_cache_entries", "sidecar.cache.migrations"),
    ("m004_create_audit", "sidecar.audit.migrations"),
    ("m005_claude_code_events", "sidecar.gateway.migrations"),
    ("m006_index_usage_upstream_request_id", "sidecar.ledger.migrations"),
    ("m007_sync_outbox", "sidecar.sync.migrations"),
]


def test_the_shipped_migrations_keep_their_names_and_order_and_each_package_owns_its_own() -> None:
    assert [(m.__name__, m.__module__) for m in MIGRATIONS][: len(SHIPPED)] == SHIPPED
    assert len({m.__name__ for m in MIGRATIONS}) == len(MIGRATIONS)

