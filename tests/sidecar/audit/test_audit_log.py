"""The audit log on a real store: appending, continuing after a restart, and `verify`
catching every kind of tampering (edit, deletion, reordering, truncation), in the store
and in an exported file."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sidecar.audit.chain import GENESIS, Entry, canonical
from sidecar.audit.export import write_jsonl
from sidecar.audit.log import HEAD_FILE, AuditLog, read_head
from sidecar.audit.verify import Report, entries_in_db, entries_in_file, verify
from sidecar.cli import cli
from sidecar.ledger.store import open_db
from sidecar.testing.audit import tamper


class Clock:
    def __init__(self) -> None:
        self.now = 1_790_000_000.0

    def __call__(self) -> float:
        self.now += 1.5
        return self.now


@pytest.fixture
def store(hermetic_env: Path) -> Path:
    """The sidecar's store path for this test (under CLAUDE_SIDECAR_HOME)."""
    return hermetic_env / "data" / "sidecar.db"


async def write(store: Path, n: int, clock: Clock | None = None) -> list[Entry]:
    log = AuditLog(store, store.parent / HEAD_FILE, clock or Clock())
    await log.start()
    entries = [log.append("request", {"n": i, "decisions": [{"stage": "budget", "action": "allow", "reason": "ok"}]}, f"req{i}") for i in range(n)]
    await log.close()
    return entries


def check(store: Path) -> Report:
    db = open_db(store)
    try:
        return verify(entries_in_db(db), read_head(store.parent / HEAD_FILE))
    finally:
        db.conn.close()


def row(store: Path, seq: int) -> tuple[object, ...]:
    conn = sqlite3.connect(store)
    try:
        found: tuple[object, ...] = conn.execute("SELECT * FROM audit WHERE seq = ?", [seq]).fetchone()
        return found
    finally:
        conn.close()


async def test_entries_are_chained_and_verify(store: Path) -> None:
    entries = await write(store, 5)
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5]
    assert entries[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(entries))
    report = check(store)
    assert report.ok and report.entries == 5 and report.last is not None and report.last.hash == entries[-1].hash
    assert read_head(store.parent / HEAD_FILE) == report.last


async def test_the_chain_continues_after_a_restart(store: Path) -> None:
    first = await write(store, 3)
    second = await write(store, 2)
    assert [e.seq for e in second] == [4, 5] and second[0].prev_hash == first[-1].hash
    assert check(store).ok


async def test_entries_are_on_disk_after_flush(store: Path) -> None:
    log = AuditLog(store, store.parent / HEAD_FILE)
    await log.start()
    log.append("request", {"n": 1})
    assert log.pending == 1
    await log.flush()
    assert log.pending == 0 and row(store, 1)[2] == "request"
    await log.close()


async def test_the_table_refuses_updates_and_deletes(store: Path) -> None:
    await write(store, 2)
    conn = sqlite3.connect(store)
    try:
        for sql in ("UPDATE audit SET data = '{}' WHERE seq = 1", "DELETE FROM audit WHERE seq = 2"):
            with pytest.raises(sqlite3.IntegrityError, match="the audit log is append-only"):
                conn.execute(sql)
    finally:
        conn.close()
    assert check(store).ok


async def test_an_edited_entry_is_named(store: Path) -> None:
    await write(store, 5)
    tamper(store, ("UPDATE audit SET data = ? WHERE seq = 3", [canonical({"n": 99, "decisions": []})]))
    report = check(store)
    assert (report.ok, report.first_bad, report.entries) == (False, 3, 2)
    assert report.problem == "entry #3: its contents do not match its hash (edited)"


async def test_an_edit_with_a_recomputed_hash_breaks_the_next_link(store: Path) -> None:
    entries = await write(store, 5)
    e = entries[2]
    forged = Entry.make(e.seq, e.ts, e.kind, e.request_id, {"n": 99}, e.prev_hash)
    tamper(store, ("UPDATE audit SET data = ?, hash = ? WHERE seq = 3", [forged.data, forged.hash]))
    report = check(store)
    assert (report.ok, report.first_bad) == (False, 4)
    assert report.problem.startswith("entry #4 does not link to the entry before it")


async def test_a_whitespace_edit_is_caught(store: Path) -> None:
    entries = await write(store, 3)
    tamper(store, ("UPDATE audit SET data = ? WHERE seq = 2", [json.dumps(json.loads(entries[1].data))]))
    report = check(store)
    assert (report.first_bad, report.problem) == (2, "entry #2: its data is not in canonical form (edited)")


async def test_an_edited_timestamp_or_kind_is_caught(store: Path) -> None:
    await write(store, 3)
    tamper(store, ("UPDATE audit SET ts = ts + 1 WHERE seq = 2", []))
    assert (check(store).first_bad, check(store).problem) == (2, "entry #2: its contents do not match its hash (edited)")


async def test_a_deleted_entry_is_named(store: Path) -> None:
    await write(store, 5)
    tamper(store, ("DELETE FROM audit WHERE seq = 3", []))
    report = check(store)
    assert (report.ok, report.first_bad) == (False, 3)
    assert report.problem == "entry #3 is missing: the log jumps from #2 to #4 (deleted or moved)"


async def test_a_deletion_hidden_by_renumbering_is_caught(store: Path) -> None:
    await write(store, 5)
    tamper(store, ("DELETE FROM audit WHERE seq = 3", []), ("UPDATE audit SET seq = seq - 1 WHERE seq > 3", []))
    report = check(store)
    assert (report.ok, report.first_bad) == (False, 3)
    assert "does not link to the entry before it" in report.problem


async def test_entries_cut_off_the_end_are_caught_by_the_head(store: Path) -> None:
    await write(store, 5)
    tamper(store, ("DELETE FROM audit WHERE seq >= 4", []))
    report = check(store)
    assert (report.ok, report.first_bad) == (False, 4)
    assert report.problem == "entries #4 to #5 are missing from the end: the head file records #5, but the log ends at #3 (it was cut short)"


async def test_reordered_entries_are_caught(store: Path) -> None:
    await write(store, 5)
    a, b = row(store, 2), row(store, 3)
    # Swap the two entries' places: each now sits at the other's seq.
    tamper(
        store,
        ("DELETE FROM audit WHERE seq IN (2, 3)", []),
        ("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)", [2, *b[1:]]),
        ("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?)", [3, *a[1:]]),
    )
    report = check(store)
    assert (report.ok, report.first_bad) == (False, 2)
    assert "does not link to the entry before it" in report.problem


async def test_a_mismatched_head_at_start_is_recorded_in_the_chain(store: Path) -> None:
    await write(store, 4)
    tamper(store, ("DELETE FROM audit WHERE seq = 4", []))
    log = AuditLog(store, store.parent / HEAD_FILE)
    await log.start()
    await log.close()
    db = open_db(store)
    try:
        last = list(entries_in_db(db))[-1]
    finally:
        db.conn.close()
    assert (last.seq, last.kind) == (4, "head_mismatch")
    assert json.loads(last.data)["head"]["seq"] == 4 and json.loads(last.data)["last"]["seq"] == 3


def lines_of(entries: list[Entry]) -> list[str]:
    out = io.StringIO()
    write_jsonl(entries, out)
    return out.getvalue().splitlines()


def verify_lines(tmp_path: Path, lines: list[str]) -> Report:
    path = tmp_path / "audit.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return verify(entries_in_file(path), from_start=False)


async def test_an_export_verifies_and_its_tampering_is_caught(store: Path, tmp_path: Path) -> None:
    entries = await write(store, 6)
    lines = lines_of(entries)
    assert json.loads(lines[0])["data"] == {"n": 0, "decisions": [{"stage": "budget", "action": "allow", "reason": "ok"}]}
    assert verify_lines(tmp_path, lines).ok
    edited = json.loads(lines[2])
    edited["data"]["n"] = 42
    assert verify_lines(tmp_path, [*lines[:2], json.dumps(edited), *lines[3:]]).first_bad == 3
    assert verify_lines(tmp_path, [*lines[:2], *lines[3:]]).problem == "entry #3 is missing: the log jumps from #2 to #4 (deleted or moved)"
    swapped = verify_lines(tmp_path, [lines[0], lines[2], lines[1], *lines[3:]])
    assert (swapped.first_bad, swapped.problem) == (2, "entry #2 is missing: the log jumps from #1 to #3 (deleted or moved)")
    assert verify_lines(tmp_path, [*lines[:3], "not json"]).problem.startswith("line 4 of ")
    # A partial export (a time range) checks from its first entry on.
    assert verify_lines(tmp_path, lines[2:]).ok
    assert not verify_lines(tmp_path, [lines[2], lines[4]]).ok


async def test_cli_verify_and_export(store: Path, tmp_path: Path) -> None:
    await write(store, 4)
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify"])
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(f"ok: 4 audit entries verified in {store}, last #4 (")
    out = tmp_path / "export.jsonl"
    exported = runner.invoke(cli, ["audit", "export", "-o", str(out)])
    assert exported.exit_code == 0 and "wrote 4 audit entries" in exported.output
    assert [json.loads(line)["seq"] for line in out.read_text().splitlines()] == [1, 2, 3, 4]
    assert runner.invoke(cli, ["audit", "verify", "--file", str(out)]).exit_code == 0
    assert runner.invoke(cli, ["audit", "export", "--since", "2099-01-01"]).output == ""

    tamper(store, ("DELETE FROM audit WHERE seq = 2", []))
    bad = runner.invoke(cli, ["audit", "verify"])
    assert bad.exit_code == 1
    assert f"BROKEN at entry #2 of {store}: entry #2 is missing: the log jumps from #1 to #3 (deleted or moved)" in bad.output
    as_json = runner.invoke(cli, ["audit", "verify", "--json"])
    assert as_json.exit_code == 1
    assert json.loads(as_json.output) | {"source": None} == {
        "source": None, "ok": False, "entries": 1, "first_bad": 2,
        "problem": "entry #2 is missing: the log jumps from #1 to #3 (deleted or moved)", "last": None,
        "unclean_shutdowns": 0,
    }  # fmt: skip


def test_cli_without_a_store_says_so(hermetic_env: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "no audit log yet" in result.output
    assert not (hermetic_env / "data" / "sidecar.db").exists()  # verifying creates nothing


def _entries(n: int) -> Iterator[Entry]:
    prev = GENESIS
    for i in range(1, n + 1):
        e = Entry.make(i, float(i), "request", None, {"i": i}, prev)
        prev = e.hash
        yield e


def test_the_hash_is_recomputable_from_an_exported_line_alone() -> None:
    import hashlib

    [line] = lines_of(list(_entries(1)))
    obj = json.loads(line)
    body = canonical({k: obj[k] for k in ("seq", "ts", "kind", "request_id", "data")})
    assert hashlib.sha256(f"{obj['prev_hash']}\n{body}".encode()).hexdigest() == obj["hash"]


async def test_a_head_file_that_cannot_be_written_does_not_wedge_the_log(store: Path) -> None:
    """The head moves after the commit, in a step of its own: when it fails, the entries are
    still written once (no `UNIQUE constraint failed: audit.seq` retries), and close is quick."""
    head = store.parent / HEAD_FILE
    head.mkdir(parents=True)  # the head file cannot be replaced: os.replace onto a directory fails
    log = AuditLog(store, head, Clock())
    await log.start()
    for i in range(3):
        log.append("request", {"n": i}, f"req{i}")
    async with asyncio.timeout(5):
        await log.flush()
    log.append("request", {"n": 3}, "req3")
    async with asyncio.timeout(5):
        await log.close()
    db = open_db(store)
    try:
        assert [e.seq for e in entries_in_db(db)] == [1, 2, 3, 4]
        assert verify(entries_in_db(db)).ok
    finally:
        db.conn.close()


async def test_a_batch_costs_one_thread_hop(store: Path) -> None:
    """Entries and the head file move in one trip to the writer thread per batch: each trip is
    a handoff of the interpreter lock that the request path waits on."""
    log = AuditLog(store, store.parent / HEAD_FILE)
    await log.start()
    assert log.writer is not None
    trips = log.writer.trips
    try:
        for batch in range(3):
            for i in range(5):
                log.append("request", {"n": batch * 5 + i})
            await log.flush()
        assert log.writer.trips - trips == 3
    finally:
        await log.close()
    assert read_head(store.parent / HEAD_FILE) is not None and read_head(store.parent / HEAD_FILE).seq == 15  # type: ignore[union-attr]
